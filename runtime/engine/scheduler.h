// Scheduler: which sequences run in the next step, and how many tokens each (after vLLM v1).
//
// Each step spends one token budget: running sequences first, in admission order (a decode
// takes one token, a chunked prefill as many as the budget allows), then waiting ones by
// (priority, arrival). When the pool has no block for a running sequence, the newest
// running sequence is preempted (its blocks freed, to be recomputed later) until it fits.
// Plain host code: no device types, trivially testable.
//
//   Scheduler scheduler(options, blocks);
//   scheduler.Add(seq);
//   StepPlan plan = scheduler.Schedule();   // then run the model, then Advance(plan)
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "runtime/engine/block_manager.h"
#include "runtime/engine/sequence.h"

namespace moe {

struct SchedulerOptions {
  int max_num_batched_tokens = 2048;  // token budget of one step
  int max_num_seqs = 256;             // running sequences at most
};

struct ScheduledSequence {
  Sequence* seq;
  int num_new_tokens;  // tokens[num_computed, num_computed + num_new_tokens) run this step
  bool samples() const { return seq->num_computed + num_new_tokens == static_cast<int>(seq->tokens.size()); }
};

struct StepPlan {
  std::vector<ScheduledSequence> scheduled;
  std::vector<Sequence*> preempted;
  int num_tokens = 0;
  bool empty() const { return scheduled.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerOptions& options, BlockManager& blocks) : options_(options), blocks_(blocks) {}

  void Add(Sequence* seq);
  // Takes a finished or aborted sequence out of the queues and frees its blocks.
  void Remove(Sequence* seq);
  StepPlan Schedule();
  // After the step ran: marks the planned tokens computed and caches newly full blocks.
  void Advance(const StepPlan& plan);

  int num_running() const { return static_cast<int>(running_.size()); }
  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  bool has_work() const { return !running_.empty() || !waiting_.empty(); }

 private:
  void ScheduleRunning(StepPlan& plan, int& budget);
  void ScheduleWaiting(StepPlan& plan, int& budget);
  void Preempt(Sequence* seq, StepPlan& plan);
  void InsertWaiting(Sequence* seq);
  bool Ready(const Sequence* seq) const;

  const SchedulerOptions options_;
  BlockManager& blocks_;
  // In serving order (priority, then arrival): served first, preempted last.
  std::vector<Sequence*> running_;
  std::deque<Sequence*> waiting_;   // sorted by (priority, arrival)
};

}  // namespace moe
