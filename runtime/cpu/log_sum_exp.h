// The normalizer of the raw logprobs: logprob(t) = logits[t] - LogSumExp(logits). Every
// sampled row pays it (each choice's confidence is made of its tokens' logprobs), so it is
// one vectorized pass with a short exp (about 4e-6 relative in each term), not libm's.
#pragma once

#include "absl/types/span.h"

namespace moe::cpu {

// The largest value, NaNs skipped; -inf if there is none.
float MaxLogit(absl::Span<const float> logits);

// log(sum(exp(logits))). -inf when every logit is -inf, +inf when one is.
float LogSumExp(absl::Span<const float> logits);

// The same, given MaxLogit(logits) (finite).
float LogSumExpAround(absl::Span<const float> logits, float max_logit);

// Softmax's numerators in place: x[i] = e^(x[i] - max_x), by the same short exp, given
// max_x = MaxLogit(x) (finite). Returns their sum (f32 lanes, then a fixed order).
float ExpAroundInPlace(absl::Span<float> x, float max_x);

}  // namespace moe::cpu
