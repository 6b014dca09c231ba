#include "runtime/cpu/log_sum_exp.h"
#include "runtime/cpu/float_vector.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace moe::cpu {
namespace {

using vec::Floats;
using vec::Ints;
using vec::kWidth;
using vec::Load;
using vec::Splat;

constexpr float kLog2E = 1.44269504f;
constexpr float kRoundingShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
constexpr uint32_t kRoundingShiftBits = 0x4B400000u;

// 2^t for t <= 0 (t below -126 gives 2^-126): 2^round(t) times 2^f, |f| <= 1/2, by a
// degree-4 polynomial through the Chebyshev nodes (3.5e-6 relative at most).
inline Floats Exp2NonPositive(Floats t) {
  t = t > Splat(-126.0f) ? t : Splat(-126.0f);
  const Floats shifted = t + kRoundingShift;  // its low mantissa bits hold round(t)
  const Floats f = t - (shifted - kRoundingShift);
  Floats p = Splat(9.666368515e-3f);
  p = p * f + 5.592197584e-2f;
  p = p * f + 2.402234904e-1f;
  p = p * f + 6.931210452e-1f;
  p = p * f + 1.0f;
  const Ints exponent = (std::bit_cast<Ints>(shifted) - static_cast<int32_t>(kRoundingShiftBits) + 127) << 23;
  return p * std::bit_cast<Floats>(exponent);
}

float Exp2NonPositive(float t) { return Exp2NonPositive(Splat(t))[0]; }

}  // namespace

float MaxLogit(absl::Span<const float> x) {
  const int64_t n = x.size(), vectors_end = n - n % kWidth;
  Floats lanes = Splat(-INFINITY);
  for (int64_t i = 0; i < vectors_end; i += kWidth) {
    const Floats v = Load(x.data() + i);
    lanes = v > lanes ? v : lanes;  // NaNs are skipped
  }
  float best = -INFINITY;
  for (int k = 0; k < kWidth; ++k) best = lanes[k] > best ? lanes[k] : best;
  for (int64_t i = vectors_end; i < n; ++i) best = x[i] > best ? x[i] : best;
  return best;
}

float LogSumExp(absl::Span<const float> logits) {
  const float max_logit = MaxLogit(logits);
  if (!std::isfinite(max_logit)) return max_logit;  // every logit -inf (or NaN), or a +inf
  return LogSumExpAround(logits, max_logit);
}

float LogSumExpAround(absl::Span<const float> x, float max_logit) {
  const int64_t n = x.size(), vectors_end = n - n % kWidth;
  // e^(l - max) = 2^(l log2 e - max log2 e). Float lanes over blocks of 1024, each block's
  // sum added in double.
  const float scaled_max = max_logit * kLog2E;
  constexpr int64_t kBlock = 1024;
  double sum = 0;
  for (int64_t start = 0; start < vectors_end; start += kBlock) {
    const int64_t end = std::min(vectors_end, start + kBlock);
    Floats lanes{};
    for (int64_t i = start; i < end; i += kWidth) lanes += Exp2NonPositive(Load(x.data() + i) * kLog2E - scaled_max);
    for (int k = 0; k < kWidth; ++k) sum += lanes[k];
  }
  for (int64_t i = vectors_end; i < n; ++i) sum += Exp2NonPositive(x[i] * kLog2E - scaled_max);
  return max_logit + static_cast<float>(std::log(sum));
}

float ExpAroundInPlace(absl::Span<float> x, float max_x) {
  const int64_t n = x.size(), vectors_end = n - n % kWidth;
  const float scaled_max = max_x * kLog2E;
  Floats lanes{};
  for (int64_t i = 0; i < vectors_end; i += kWidth) {
    const Floats e = Exp2NonPositive(Load(x.data() + i) * kLog2E - scaled_max);
    std::memcpy(x.data() + i, &e, sizeof(e));
    lanes += e;
  }
  float sum = 0;
  for (int k = 0; k < kWidth; ++k) sum += lanes[k];
  for (int64_t i = vectors_end; i < n; ++i) {
    x[i] = Exp2NonPositive(x[i] * kLog2E - scaled_max);
    sum += x[i];
  }
  return sum;
}

}  // namespace moe::cpu
