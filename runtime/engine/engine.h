// Engine: continuous batching. One thread owns the scheduler, the KV cache and the model;
// any thread may Submit and Abort. Each step reads like the design's diagram:
//
//   drain submissions and aborts -> Schedule() -> build StepBatch -> Model::Forward
//   -> Sample -> append, stop checks, detokenize -> OutputSink callbacks
//
//   ASSIGN_OR_RETURN(auto engine, Engine::Create(model, {.num_kv_blocks = 512}));
//   engine->Start();                                   // or RunUntilIdle() on this thread
//   RETURN_IF_ERROR(engine->Submit(request, sink));   // sink gets deltas, then a final record
//   engine->Abort("req-1");
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "runtime/dist/communicator.h"
#include "runtime/engine/block_manager.h"
#include "runtime/engine/group_relay.h"
#include "runtime/engine/output.h"
#include "runtime/engine/request.h"
#include "runtime/engine/sampler.h"
#include "runtime/engine/scheduler.h"
#include "runtime/engine/sequence.h"
#include "runtime/engine/text_stream.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"

namespace moe {

struct EngineOptions {
  // Expert parallelism with data-parallel attention: the ranks of this group each run an
  // engine over their own sequences, stepping in lockstep. Rank 0's engine takes every
  // submission and places it on a rank; the other ranks take none and run until rank 0
  // stops (RunGroupMember). Null or one rank: a plain engine.
  dist::Communicator* group = nullptr;
  int num_kv_blocks = 1024;
  int64_t kv_cache_bytes = 0;  // if > 0, sizes the pool instead: as many blocks as fit
  int block_size = 16;
  bool enable_prefix_caching = true;
  SchedulerOptions scheduler;
  int max_waiting_requests = 0;    // Submit refuses beyond this many queued; 0 = no limit
  TextStreamFactory text_streams;  // optional: without it, no text and no stop strings
};

// Blocks of `block_size` tokens that fit in `bytes` of KV cache for this model.
int64_t KvBlocksForBudget(const ModelInfo& info, int block_size, int64_t bytes);

// Wall time the engine thread spent in each phase of its steps, summed.
struct StepPhaseTimes {
  absl::Duration schedule;     // drain submissions, time limits, Schedule()
  absl::Duration build_batch;
  absl::Duration forward;      // Model::Forward
  absl::Duration postprocess;  // sample, append, stop checks, sinks
};

struct EngineStats {
  // Summed over the group's ranks (as of their latest step) on rank 0 of a group.
  int running = 0;
  int waiting = 0;
  int free_blocks = 0;
  int total_blocks = 0;
  std::vector<RankLoad> ranks;  // per rank, in a group of more than one
  int64_t steps = 0;
  int64_t idle_steps = 0;  // steps this rank joined with no tokens (expert parallelism)
  int64_t preemptions = 0;
  PrefixCacheStats prefix_cache;
  StepPhaseTimes phase_times;
};

class Engine {
 public:
  // Checks the options (block size a power of two, a pool of at least one block, positive
  // budgets) and allocates the KV cache.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(Model& model, EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and enqueues. Errors (bad ids, too long, can never fit) come back here and
  // nothing reaches the sink.
  absl::Status Submit(Request request, std::shared_ptr<OutputSink> sink);
  // Finishes the request with kAborted; its blocks are freed at the next step. False when
  // no request of that id is live (not submitted yet, or finished): nothing is done.
  bool Abort(const std::string& request_id);

  // Runs steps on a background thread until Stop() (or destruction).
  void Start();
  void Stop();
  // Runs steps on the calling thread until nothing is left (tests, offline use).
  absl::Status RunUntilIdle();
  // One step on the calling thread; false when there was nothing to do (on any rank).
  absl::StatusOr<bool> Step();
  // The other ranks of a group: steps on the calling thread until rank 0 stops the group.
  absl::Status RunGroupMember();

  EngineStats GetStats() const;

  // For a group that is aborting (a Communicator abort handler): every open request, here or
  // relayed to another rank, gets a final record of kError with `status`, now, on the
  // calling thread, with no step. Only while the engine thread is stopped or blocked inside
  // a step, where the abort handler runs; the engine is unusable afterwards.
  void FailEverything(const absl::Status& status);

 private:
  struct RequestState {
    uint64_t submission = 0;  // which Submit() of this id: a stale Abort must not match
    std::shared_ptr<const Request> request;
    std::vector<std::unique_ptr<Sequence>> choices;
    int unfinished = 0;
  };

  Engine(Model& model, EngineOptions options, KvCache kv);
  absl::Status DrainInbox();
  absl::StatusOr<bool> StepHere();
  absl::Status ExchangeOutputs();
  void AbortEverything();

  void Admit(Submission submission);
  void FinishRequest(RequestState& state, FinishReason reason);
  void Finish(Sequence& seq, FinishReason reason, std::string matched_stop = "",
              absl::Status error = absl::OkStatus());
  void PublishStats();
  void ExpireTimeLimits();
  StepBatch BuildBatch(const StepPlan& plan) const;
  // The sampling parameters of the plan's sampling sequences, one row each, in batch order.
  void BuildSampling(const StepPlan& plan);
  void Postprocess(const StepPlan& plan, const StepSamples& samples);
  void EmitToken(Sequence& seq, const Sampled& sampled);
  void Loop();

  Model& model_;
  const EngineOptions options_;
  KvCache kv_;
  BlockManager blocks_;
  Scheduler scheduler_;
  SamplingBatch sampling_;  // reused from step to step
  OutputDelta delta_;  // reused by EmitToken
  std::map<std::string, RequestState> requests_;  // engine thread only
  uint64_t next_arrival_ = 0;
  int num_time_limited_ = 0;  // requests with a time limit, so most steps skip the check
  int64_t steps_ = 0;
  int64_t idle_steps_ = 0;
  int64_t preemptions_ = 0;
  StepPhaseTimes phase_times_;
  std::unique_ptr<GroupRelay> relay_;  // in a group of more than one rank
  bool group_stopped_ = false;         // rank 0 stopped the group: every step is done

  mutable absl::Mutex mu_;
  std::vector<Submission> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<AbortOrder> aborts_ ABSL_GUARDED_BY(mu_);
  // Submitted and not finished: id -> its submission number. An id may be reused once its
  // request has finished, so aborts carry the number and only ever hit the request they saw.
  absl::flat_hash_map<std::string, uint64_t> live_ ABSL_GUARDED_BY(mu_);
  uint64_t next_submission_ ABSL_GUARDED_BY(mu_) = 0;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace moe
