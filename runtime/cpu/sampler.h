// The CPU sampler: a step's logits rows to tokens, by the algorithm of runtime/sampling_math.h
// (the CUDA sampler's too), in O(V) per row: vectorized passes over the row and a radix
// select of the top-k and top-p thresholds, never a sort. Rows run in parallel.
//
//   StepSamples out;
//   cpu::SampleRows(logits, sampling, out);   // logits [S', V] f32, one RowSampling per row
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "runtime/sampling.h"
#include "runtime/tensor.h"

namespace moe::cpu {

// Samples one row at a time, reusing its buffers.
class RowSampler {
 public:
  struct Result {
    int32_t token = -1;  // -1: nothing could be chosen (every logit NaN or -inf)
    float logprob = 0;   // of `token` under the raw logits
  };
  // `top` receives the row's row.top_logprobs most likely raw tokens (value, then id order).
  Result Sample(absl::Span<const float> logits, const RowSampling& row,
                absl::Span<const TokenAdjustment> adjustments, absl::Span<TokenLogprob> top);

 private:
  int32_t Draw(absl::Span<const float> logits, float max_logit, const RowSampling& row);

  std::vector<float> processed_;  // [V] the logits after adjustments, when there are any
  std::vector<uint32_t> keys_;    // [V]
  std::vector<uint32_t> boundary_;    // the keys the radix select still has to split
  std::vector<uint32_t> candidates_;  // top-p: the keys above a cutoff that holds the nucleus
};

// Every row of `logits` [S', V] f32 with its parameters; rows are spread over the OpenMP
// threads, each with its own RowSampler.
void SampleRows(const Tensor& logits, const SamplingBatch& sampling, StepSamples& out);

}  // namespace moe::cpu
