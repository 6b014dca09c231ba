#include "runtime/cpu/rope.h"

#include <cmath>

#include "runtime/check.h"

namespace moe::cpu {

void ApplyRope(const std::vector<int32_t>& positions, double theta, Tensor& x) {
  CHECK(x.rank() == 3 && x.dtype() == DType::kF32 && x.dim(0) == static_cast<int64_t>(positions.size()));
  const int64_t T = x.dim(0), H = x.dim(1), hd = x.dim(2), half = hd / 2;
  CHECK_EQ(hd % 2, 0);
  // inv_freq and the angle are rounded to f32 as transformers computes them, so long
  // positions give the same angles.
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(hd);
    inv_freq[i] = 1.0f / static_cast<float>(std::pow(theta, static_cast<double>(exponent)));
  }
#pragma omp parallel for schedule(static) if (T * H * hd > 32768)
  for (int64_t t = 0; t < T; ++t) {
    std::vector<float> cos_p(half), sin_p(half);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      cos_p[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin_p[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
    for (int64_t h = 0; h < H; ++h) {
      float* v = x.Row<float>(t) + h * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_p[i] - b * sin_p[i];
        v[i + half] = b * cos_p[i] + a * sin_p[i];
      }
    }
  }
}

}  // namespace moe::cpu
