// What the engine streams back for a request: deltas as tokens are made, then one final
// record per choice. Sinks are called on the engine thread and must not block.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "runtime/sampling.h"  // TokenLogprob

namespace moe {

enum class FinishReason { kEos, kStopString, kStopToken, kLength, kTimeLimit, kAborted, kError };
const char* FinishReasonName(FinishReason reason);  // "eos", "stop_string", ...

struct SampledLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;  // the top-n, most likely first
};

struct OutputDelta {
  int choice = 0;
  std::vector<int32_t> token_ids;         // new tokens
  std::string text;                       // new text (held back near a possible stop string)
  std::vector<SampledLogprobs> logprobs;  // one per new token, if requested
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;  // prompt tokens found in the prefix cache
};

struct Timings {
  absl::Duration queue;               // arrival to first scheduled
  absl::Duration time_to_first_token;
  absl::Duration end_to_end;
};

// How sure the model was of a choice: the logprobs of its sampled tokens under the raw logits
// (always computed, whether or not logprobs were asked for). Clients gate or route on it.
struct Confidence {
  int tokens = 0;             // sampled tokens counted
  double mean_logprob = 0;    // 0 when there are none
  float min_logprob = 0;
};

struct FinalOutput {
  int choice = 0;
  FinishReason reason = FinishReason::kLength;
  std::string matched_stop;  // the stop string, or the stop token id as text
  Usage usage;
  Timings timings;
  Confidence confidence;
  absl::Status error;        // set when reason is kError
};

class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual void OnDelta(const OutputDelta& delta) = 0;
  virtual void OnFinal(const FinalOutput& final) = 0;
};

}  // namespace moe
