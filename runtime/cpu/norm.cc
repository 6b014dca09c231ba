#include "runtime/cpu/norm.h"

#include <cmath>

#include "runtime/check.h"

namespace moe::cpu {

void RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t C = weight.numel();
  CHECK(weight.dtype() == DType::kF32 && x.dtype() == DType::kF32 && out.dtype() == DType::kF32);
  CHECK(C > 0 && x.numel() % C == 0 && out.numel() == x.numel())
      << "RmsNorm: x " << ShapeString(x.shape()) << " weight " << ShapeString(weight.shape());
  const int64_t R = x.numel() / C;
  const float* w = weight.data<float>();
#pragma omp parallel for schedule(static) if (R * C > 32768)
  for (int64_t r = 0; r < R; ++r) {
    const float* xr = x.data<float>() + r * C;
    float* yr = out.data<float>() + r * C;
    float sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += xr[c] * xr[c];
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(C) + eps);
    for (int64_t c = 0; c < C; ++c) yr[c] = w[c] * (xr[c] * inv);
  }
}

}  // namespace moe::cpu
