// Sequence: one choice of one request as the scheduler and engine track it.
//
// tokens holds the prompt then the generated tokens; the first num_computed of them have
// their K/V in the cache (in the blocks of block_table). A sequence that has sampled its
// latest token always has exactly one token more than it has computed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "runtime/engine/block_manager.h"
#include "runtime/engine/output.h"
#include "runtime/engine/request.h"

namespace moe {

class StopChecker;

enum class SequenceStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  std::shared_ptr<const Request> request;
  int choice = 0;
  const Sequence* leader = nullptr;  // choice 0 of the request, for choices > 0
  uint64_t seed = 0;
  uint64_t arrival_order = 0;  // FCFS tie-break within a priority

  std::vector<int32_t> tokens;  // [prompt + generated]
  int prompt_len = 0;
  int num_computed = 0;
  int num_cached_tokens = 0;    // prompt tokens found in the prefix cache at first admission
  bool first_admission = true;
  std::vector<int32_t> block_table;
  std::vector<ChainLink> block_chain;  // the prefix cache's chain of the full blocks so far
  SequenceStatus status = SequenceStatus::kWaiting;
  double logprob_sum = 0;   // of the sampled tokens, for the final Confidence
  float min_logprob = 0;

  std::shared_ptr<OutputSink> sink;
  std::unique_ptr<StopChecker> stop;
  absl::Time arrival;
  absl::Time first_scheduled = absl::InfiniteFuture();
  absl::Time first_token = absl::InfiniteFuture();

  int num_output() const { return static_cast<int>(tokens.size()) - prompt_len; }
  bool prefill_done() const { return num_computed >= prompt_len; }
};

}  // namespace moe
