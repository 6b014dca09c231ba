// Sampler: turns one row of logits into the next token of a sequence.
//
// Order, as in vLLM: min_tokens mask (EOS and stop tokens), logit bias, repetition /
// presence / frequency penalties; then greedy argmax, or temperature, min-p, top-k,
// top-p and an inverse-CDF draw with a Philox uniform keyed by the request's seed and
// counted by (output index, choice), so a seeded request is reproducible in any batch.
// Logprobs are those of the raw logits (log-softmax before any processing).
//
//   Sampler sampler;
//   Sampled s = sampler.Sample({.logits = row, .vocab_size = V, .params = &params, ...});
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "runtime/engine/output.h"
#include "runtime/engine/request.h"

namespace moe {

struct SampleInput {
  absl::Span<const float> logits;  // [V] raw
  const SamplingParams* params = nullptr;
  absl::Span<const int32_t> prompt;         // for the repetition penalty
  absl::Span<const int32_t> output;         // tokens generated so far
  absl::Span<const int32_t> masked_tokens;  // forbidden now (EOS/stop ids before min_tokens)
  uint64_t seed = 0;
  int choice = 0;
};

struct Sampled {
  int32_t token = -1;  // -1: nothing could be chosen (every logit NaN or -inf)
  float logprob = 0;   // of `token` under the raw logits (log-softmax before any processing)
  std::optional<SampledLogprobs> logprobs;
};

// log(sum(exp(logits))), vectorized (about 2e-7 relative error in each exp): the raw
// logprob of token t is logits[t] - LogSumExp(logits). -inf when every logit is -inf.
float LogSumExp(absl::Span<const float> logits);

class Sampler {
 public:
  Sampled Sample(const SampleInput& in);

 private:
  void ApplyPenaltiesAndBias(const SampleInput& in);
  int32_t Draw(const SampleInput& in);
  void KeepNucleus(float top_p, const std::vector<float>& probs);

  std::vector<float> logits_;             // [V] processed
  std::vector<int32_t> counts_;           // [V] occurrences in the output
  std::vector<int32_t> order_;            // candidate token ids
};

}  // namespace moe
