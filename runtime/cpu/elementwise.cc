#include "runtime/cpu/elementwise.h"

#include <algorithm>
#include <cmath>

#include "runtime/check.h"

namespace moe::cpu {

void Embed(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  const int64_t D = table.dim(1);
  CHECK(out.dtype() == DType::kF32 && out.dim(0) == static_cast<int64_t>(ids.size()) && out.dim(1) == D);
  const size_t row_bytes = D * DTypeSize(table.dtype());
  for (size_t t = 0; t < ids.size(); ++t) {
    CHECK(ids[t] >= 0 && ids[t] < table.dim(0)) << "token id " << ids[t];
    const auto* src = static_cast<const std::byte*>(table.raw()) + ids[t] * row_bytes;
    ConvertToFloat(table.dtype(), src, out.Row<float>(t), D);
  }
}

void GatherRows(const Tensor& x, const std::vector<int32_t>& rows, Tensor& out) {
  const int64_t D = x.dim(1);
  CHECK(out.dim(0) == static_cast<int64_t>(rows.size()) && out.dim(1) == D);
  for (size_t r = 0; r < rows.size(); ++r) std::copy_n(x.Row<float>(rows[r]), D, out.Row<float>(r));
}

void AddInPlace(const Tensor& x, Tensor& y) {
  CHECK_EQ(x.numel(), y.numel());
  const float* a = x.data<float>();
  float* b = y.data<float>();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) b[i] += a[i];
}

void SiluMul(const Tensor& gate_up, Tensor& out) {
  const int64_t T = gate_up.dim(0), I = gate_up.dim(1) / 2;
  CHECK(gate_up.dim(1) == 2 * I && out.dim(0) == T && out.dim(1) == I);
  for (int64_t t = 0; t < T; ++t) {
    const float* g = gate_up.Row<float>(t);
    const float* u = g + I;
    float* o = out.Row<float>(t);
    for (int64_t i = 0; i < I; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
}

void Clamp(float limit, Tensor& x) {
  float* p = x.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = std::clamp(p[i], -limit, limit);
}

}  // namespace moe::cpu
