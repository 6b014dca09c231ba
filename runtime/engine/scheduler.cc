#include "runtime/engine/scheduler.h"

#include <algorithm>

#include "runtime/check.h"

namespace moe {
namespace {

bool ServedBefore(const Sequence* a, const Sequence* b) {
  if (a->request->priority != b->request->priority) return a->request->priority < b->request->priority;
  if (a->arrival_order != b->arrival_order) return a->arrival_order < b->arrival_order;
  return a->choice < b->choice;
}

}  // namespace

void Scheduler::Add(Sequence* seq) {
  seq->status = SequenceStatus::kWaiting;
  InsertWaiting(seq);
}

void Scheduler::InsertWaiting(Sequence* seq) {
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), seq, ServedBefore), seq);
}

void Scheduler::Remove(Sequence* seq) {
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
  blocks_.Release(seq->block_table);
  seq->status = SequenceStatus::kFinished;
}

void Scheduler::Preempt(Sequence* seq, StepPlan& plan) {
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  blocks_.Release(seq->block_table);
  seq->block_chain.clear();
  seq->num_computed = 0;  // recomputed from the prompt (and its outputs) when readmitted
  seq->status = SequenceStatus::kWaiting;
  InsertWaiting(seq);
  plan.preempted.push_back(seq);
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  int budget = options_.max_num_batched_tokens;
  ScheduleRunning(plan, budget);
  if (plan.preempted.empty()) ScheduleWaiting(plan, budget);
  return plan;
}

void Scheduler::ScheduleRunning(StepPlan& plan, int& budget) {
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    const int num_new = std::min<int>(seq->tokens.size() - seq->num_computed, budget);
    bool preempted_self = false;
    while (!blocks_.Grow(seq->block_table, seq->num_computed + num_new)) {
      Sequence* victim = running_.back();  // served last: lowest priority, then newest
      Preempt(victim, plan);
      if (victim == seq) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) break;
    plan.scheduled.push_back({seq, num_new});
    plan.num_tokens += num_new;
    budget -= num_new;
    ++i;
  }
}

// Choices > 0 of a request wait for choice 0's prefill, then share its prompt blocks
// through the prefix cache instead of computing the prompt again.
bool Scheduler::Ready(const Sequence* seq) const {
  return seq->leader == nullptr || seq->leader->status == SequenceStatus::kFinished ||
         seq->leader->prefill_done();
}

void Scheduler::ScheduleWaiting(StepPlan& plan, int& budget) {
  for (auto it = waiting_.begin(); it != waiting_.end() && budget > 0 &&
                                   static_cast<int>(running_.size()) < options_.max_num_seqs;) {
    Sequence* seq = *it;
    if (!Ready(seq)) {
      ++it;
      continue;
    }
    CHECK(seq->block_table.empty() && seq->num_computed == 0);
    PrefixMatch hit = blocks_.MatchPrefix(seq->tokens, seq->request->cache_salt);
    seq->block_table = std::move(hit.blocks);
    seq->block_chain = std::move(hit.chain);
    seq->num_computed = hit.num_tokens;
    const int num_new = std::min<int>(seq->tokens.size() - seq->num_computed, budget);
    if (!blocks_.Grow(seq->block_table, seq->num_computed + num_new)) {
      blocks_.Release(seq->block_table);
      seq->block_chain.clear();
      seq->num_computed = 0;
      break;  // FCFS: nobody overtakes the head of the queue
    }
    if (seq->first_admission) {  // a readmission after preemption finds its own blocks
      seq->first_admission = false;
      seq->num_cached_tokens = std::min(hit.num_tokens, seq->prompt_len);
      blocks_.RecordAdmission(seq->prompt_len, seq->num_cached_tokens);
    }
    seq->status = SequenceStatus::kRunning;
    running_.insert(std::upper_bound(running_.begin(), running_.end(), seq, ServedBefore), seq);
    it = waiting_.erase(it);
    plan.scheduled.push_back({seq, num_new});
    plan.num_tokens += num_new;
    budget -= num_new;
  }
}

void Scheduler::Advance(const StepPlan& plan) {
  for (const ScheduledSequence& s : plan.scheduled) {
    Sequence* seq = s.seq;
    seq->num_computed += s.num_new_tokens;
    blocks_.CacheFullBlocks(seq->block_table, seq->tokens, seq->num_computed,
                            seq->request->cache_salt, seq->block_chain);
  }
}

}  // namespace moe
