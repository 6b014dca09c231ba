// What a step's sampling needs, row by row, as the engine hands it to a backend, and what a
// backend's sampler hands back. Both backends run the same algorithm on it
// (runtime/sampling_math.h), so they pick the same tokens from the same logits.
//
//   SamplingBatch sampling;                       // one RowSampling per logits row
//   ASSIGN_OR_RETURN(StepSamples out, model.ForwardAndSample(batch, kv, sampling));
//   out.tokens[row], out.logprobs[row], out.top_of(row)
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace moe {

struct TokenLogprob {
  int32_t token;
  float logprob;  // log-softmax of the model's raw logits
};

// A token whose logit is changed before sampling; a row's adjustments hold each token once,
// in increasing token order.
struct TokenAdjustment {
  int32_t token = 0;
  float bias = 0;            // logit_bias
  int32_t output_count = 0;  // times in the output: frequency and presence penalties
  bool seen = false;         // in the prompt or the output: the repetition penalty
  bool masked = false;       // forbidden now (EOS and stop tokens before min_tokens)
};

// One logits row's parameters, in the form the kernels use: the float parameters a request
// gives are turned into these once, on the host (MakeRowSampling in the engine).
struct RowSampling {
  bool greedy = true;            // argmax of the processed logits; the rest below is unused
  float inv_temperature = 1.0f;  // 1 / T
  int32_t top_k = 0;             // 0: no limit
  // top_p as a fraction of 2^24 (kFullFraction: no limit), and min_p as the smallest key
  // kept (the float bits of max(min_p, 2^-40), probability relative to the most likely).
  uint32_t top_p_fraction = 1u << 24;
  uint32_t min_key = 0;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // The Philox draw: stream `seed`, counter (output index, choice).
  uint64_t seed = 0;
  uint64_t output_index = 0;
  uint32_t choice = 0;
  int32_t top_logprobs = 0;  // the n most likely raw tokens to return with their logprobs
  // This row's adjustments: SamplingBatch::adjustments[adjustments_begin, adjustments_end).
  int32_t adjustments_begin = 0;
  int32_t adjustments_end = 0;

  static constexpr uint32_t kFullFraction = 1u << 24;
};

struct SamplingBatch {
  std::vector<RowSampling> rows;  // [S'], one per logits row
  std::vector<TokenAdjustment> adjustments;

  int num_rows() const { return static_cast<int>(rows.size()); }
  absl::Span<const TokenAdjustment> adjustments_of(int row) const {
    const RowSampling& r = rows[row];
    return absl::MakeConstSpan(adjustments).subspan(r.adjustments_begin, r.adjustments_end - r.adjustments_begin);
  }
  // The widest top-n any row asks for: the stride of StepSamples::top.
  int max_top_logprobs() const {
    int n = 0;
    for (const RowSampling& r : rows) n = r.top_logprobs > n ? r.top_logprobs : n;
    return n;
  }
};

// A step's sampled tokens, one per logits row.
struct StepSamples {
  std::vector<int32_t> tokens;  // [S']; -1: nothing could be chosen (every logit NaN or -inf)
  std::vector<float> logprobs;  // [S'] of each token under the raw logits
  int top_n = 0;                // stride of `top`: SamplingBatch::max_top_logprobs()
  std::vector<TokenLogprob> top;  // [S', top_n]; a row's first top_logprobs entries are its own

  void Resize(int rows, int n) {
    tokens.assign(rows, -1);
    logprobs.assign(rows, 0.0f);
    top_n = n;
    top.assign(static_cast<size_t>(rows) * n, TokenLogprob{-1, 0.0f});
  }
  absl::Span<const TokenLogprob> top_of(int row, int n) const {
    return absl::MakeConstSpan(top).subspan(static_cast<size_t>(row) * top_n, n);
  }
};

}  // namespace moe
