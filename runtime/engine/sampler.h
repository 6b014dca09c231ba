// The engine's side of sampling: a sequence's SamplingParams and history turned into the
// RowSampling and token adjustments a backend samples with (runtime/sampling.h; the one
// place that conversion is made), the samples turned back into what the engine streams,
// and a one-row Sampler over the CPU's, for tests and benchmarks.
//
// The semantics, as in vLLM: min_tokens mask (EOS and stop tokens), logit bias, repetition /
// presence / frequency penalties; then greedy argmax, or temperature, min-p, top-k, top-p
// and a draw with Philox bits keyed by the request's seed and counted by (output index,
// choice), so a seeded request is reproducible in any batch and on any backend. Logprobs
// are those of the raw logits (log-softmax before any processing).
//
//   AppendRow(input, sampling);                     // once per logits row, in row order
//   ... model.ForwardAndSample(batch, kv, sampling) ...
//   Sampled s = SampledRow(samples, row, params);
//
//   Sampler sampler;                                // one row at a time
//   Sampled s = sampler.Sample({.logits = row, .params = &params, ...});
#pragma once

#include <cstdint>
#include <optional>

#include "absl/types/span.h"
#include "runtime/cpu/sampler.h"
#include "runtime/engine/output.h"
#include "runtime/engine/request.h"
#include "runtime/sampling.h"

namespace moe {

struct SampleInput {
  absl::Span<const float> logits;  // [V] raw; only Sampler::Sample reads them
  const SamplingParams* params = nullptr;
  absl::Span<const int32_t> prompt;         // for the repetition penalty
  absl::Span<const int32_t> output;         // tokens generated so far
  absl::Span<const int32_t> masked_tokens;  // forbidden now (EOS/stop ids before min_tokens)
  uint64_t seed = 0;
  int choice = 0;
};

// Appends the row `in` describes to `batch`: its RowSampling and its adjustments.
void AppendRow(const SampleInput& in, SamplingBatch& batch);

struct Sampled {
  int32_t token = -1;  // -1: nothing could be chosen (every logit NaN or -inf)
  float logprob = 0;   // of `token` under the raw logits (log-softmax before any processing)
  std::optional<SampledLogprobs> logprobs;
};

// Row `row` of `samples`, with the logprobs `params` asked for.
Sampled SampledRow(const StepSamples& samples, int row, const SamplingParams& params);

class Sampler {
 public:
  Sampled Sample(const SampleInput& in);

 private:
  SamplingBatch batch_;
  StepSamples samples_;
  cpu::RowSampler row_;
};

}  // namespace moe
