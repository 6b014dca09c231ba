#include "runtime/cpu/linear.h"

#include <algorithm>
#include <vector>

#include "runtime/check.h"
#include "runtime/cpu/linear_avx512.h"

namespace moe::cpu {
namespace {

// Rows of w converted and reused together; 4 dot products share each load of x.
constexpr int64_t kRowBlock = 16;

// Rows of w one thread takes at a time on the AVX-512 path.
constexpr int64_t kColumnBlock = 32;

// out[r] = dot(x, w + r*k) for r in 0..3, four independent accumulation chains.
inline void Dot4(const float* x, const float* w, int64_t k, float* out) {
  const float* w0 = w;
  const float* w1 = w + k;
  const float* w2 = w + 2 * k;
  const float* w3 = w + 3 * k;
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
  for (int64_t i = 0; i < k; ++i) {
    a0 += x[i] * w0[i];
    a1 += x[i] * w1[i];
    a2 += x[i] * w2[i];
    a3 += x[i] * w3[i];
  }
  out[0] = a0, out[1] = a1, out[2] = a2, out[3] = a3;
}

inline float Dot(const float* x, const float* w, int64_t k) {
  float a = 0;
#pragma omp simd reduction(+ : a)
  for (int64_t i = 0; i < k; ++i) a += x[i] * w[i];
  return a;
}

}  // namespace

void Linear(const Tensor& x, const Tensor& w, Tensor& y, GemmInputs inputs) {
  CHECK(x.rank() == 2 && w.rank() == 2 && y.rank() == 2);
  const int64_t T = x.dim(0), K = x.dim(1), N = w.dim(0);
  CHECK_EQ(w.dim(1), K) << "Linear: x " << ShapeString(x.shape()) << " w " << ShapeString(w.shape());
  CHECK(y.dim(0) == T && y.dim(1) == N) << "Linear: y " << ShapeString(y.shape());
  CHECK(x.dtype() == DType::kF32 && y.dtype() == DType::kF32);
  CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16);
  if (T == 0 || N == 0) return;
  const bool w_bf16 = w.dtype() == DType::kBF16;
  const bool bf16_inputs = w_bf16 && inputs == GemmInputs::kBF16;
  // Small products stay on one thread: waking a team costs more than they do.
  const bool parallel = T * N * K >= (1 << 18);

  if (avx512::Available()) {
    // The bf16 copy of x lives as long as the thread, grown and never freed.
    thread_local std::vector<uint16_t> x_bf16;
    if (bf16_inputs && static_cast<int64_t>(x_bf16.size()) < T * K) x_bf16.resize(T * K);
    const avx512::GemmOperands g{.x = bf16_inputs ? static_cast<const void*>(x_bf16.data()) : x.data<float>(),
                                 .x_stride = K,
                                 .w = w.raw(),
                                 .w_stride = K,
                                 .y = y.data<float>(),
                                 .y_stride = N,
                                 .M = T, .N = N, .K = K,
                                 .w_bf16 = w_bf16,
                                 .bf16_inputs = bf16_inputs};
    const int64_t num_blocks = (N + kColumnBlock - 1) / kColumnBlock;
    uint16_t* const x_round = x_bf16.data();
#pragma omp parallel if (parallel)
    {
      if (bf16_inputs) {
#pragma omp for schedule(static)
        for (int64_t t = 0; t < T; ++t) avx512::RoundToBf16(x.Row<float>(t), x_round + t * K, K);
      }
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < num_blocks; ++blk) {
        avx512::GemmColumns(g, blk * kColumnBlock, std::min(N, (blk + 1) * kColumnBlock));
      }
    }
    return;
  }

  // Portable: rows of w converted to f32 a block at a time; rounded inputs are rounded first.
  Tensor rounded;
  const Tensor* xr = &x;
  if (bf16_inputs) {
    rounded = x.To(DType::kBF16).To(DType::kF32);
    xr = &rounded;
  }
  const int64_t num_blocks = (N + kRowBlock - 1) / kRowBlock;
#pragma omp parallel if (parallel)
  {
    std::vector<float> wbuf(w_bf16 ? kRowBlock * K : 0);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < num_blocks; ++blk) {
      const int64_t n0 = blk * kRowBlock;
      const int64_t rows = std::min(kRowBlock, N - n0);
      const float* wb;
      if (w_bf16) {
        ConvertToFloat(w.dtype(), w.Row<uint16_t>(n0), wbuf.data(), rows * K);
        wb = wbuf.data();
      } else {
        wb = w.Row<float>(n0);
      }
      for (int64_t t = 0; t < T; ++t) {
        const float* xt = xr->Row<float>(t);
        float* yt = y.Row<float>(t) + n0;
        int64_t r = 0;
        for (; r + 4 <= rows; r += 4) Dot4(xt, wb + r * K, K, yt + r);
        for (; r < rows; ++r) yt[r] = Dot(xt, wb + r * K, K);
      }
    }
  }
}

void AddBias(const Tensor& bias, Tensor& y) {
  CHECK(bias.dtype() == DType::kF32 && bias.numel() == y.dim(1));
  const float* b = bias.data<float>();
  for (int64_t t = 0; t < y.dim(0); ++t) {
    float* row = y.Row<float>(t);
    for (int64_t n = 0; n < y.dim(1); ++n) row[n] += b[n];
  }
}

}  // namespace moe::cpu
