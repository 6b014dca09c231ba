#include "runtime/cpu/linear.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "runtime/check.h"
#include "runtime/cpu/linear_avx512.h"

namespace moe::cpu {
namespace {

// Rows of w converted and reused together; 4 dot products share each load of x.
constexpr int64_t kRowBlock = 16;

// Elements between rows of the bf16 copy of x: K rounded up to a cache line, and a line more
// where rows would otherwise be a multiple of 1 KiB apart, so that the rows a tile reads side
// by side fall in different sets of the L1 cache instead of evicting one another (K = 2048:
// 4 KiB apart, every row in the same sets).
int64_t RoundedRowStride(int64_t K) {
  const int64_t stride = (K + 31) / 32 * 32;
  return stride % 512 == 0 ? stride + 32 : stride;
}

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

// Rows of w converted to f32 a block at a time, 4 dot products sharing each load of x.
void PortableLinear(const Tensor& x, const Tensor& w, Tensor& y, bool parallel) {
  const int64_t T = x.dim(0), K = x.dim(1), N = w.dim(0);
  const bool w_bf16 = w.dtype() == DType::kBF16;
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
        const float* xt = x.Row<float>(t);
        float* yt = y.Row<float>(t) + n0;
        int64_t r = 0;
        for (; r + 4 <= rows; r += 4) Dot4(xt, wb + r * K, K, yt + r);
        for (; r < rows; ++r) yt[r] = Dot(xt, wb + r * K, K);
      }
    }
  }
}

}  // namespace

void Linear(const Tensor& x, const Tensor& w, Tensor& y, GemmInputs inputs) {
  const LinearProduct product{.x = x, .w = w, .y = y};
  Linear(std::span(&product, 1), inputs);
}

void Linear(std::span<const LinearProduct> products, GemmInputs inputs) {
  int64_t work = 0;
  for (const LinearProduct& p : products) {
    const Tensor &x = p.x, &w = p.w, &y = p.y;
    CHECK(x.rank() == 2 && w.rank() == 2 && y.rank() == 2);
    CHECK_EQ(w.dim(1), x.dim(1)) << "Linear: x " << ShapeString(x.shape()) << " w " << ShapeString(w.shape());
    CHECK(y.dim(0) == x.dim(0) && y.dim(1) == w.dim(0)) << "Linear: y " << ShapeString(y.shape());
    CHECK(x.dtype() == DType::kF32 && y.dtype() == DType::kF32);
    CHECK(w.dtype() == DType::kF32 || w.dtype() == DType::kBF16);
    work += x.dim(0) * w.dim(0) * x.dim(1);
  }
  if (work == 0) return;
  // Small products stay on one thread: waking a team costs more than they do.
  const bool parallel = work >= (1 << 18);
  auto rounds = [inputs](const LinearProduct& p) { return p.w.dtype() == DType::kBF16 && inputs == GemmInputs::kBF16; };

  if (avx512::Available()) {
    // Every product's bf16 copy of x, in one buffer that lives as long as the thread, its rows
    // RoundedRowStride apart.
    thread_local std::vector<uint16_t> x_bf16;
    std::vector<int64_t> x_offset(products.size() + 1, 0);
    for (size_t i = 0; i < products.size(); ++i) {
      const Tensor& x = products[i].x;
      x_offset[i + 1] = x_offset[i] + (rounds(products[i]) ? x.dim(0) * RoundedRowStride(x.dim(1)) : 0);
    }
    if (static_cast<int64_t>(x_bf16.size()) < x_offset.back()) x_bf16.resize(x_offset.back());
    // One work list over every product: a block is avx512::kColumnBlock rows of one w.
    std::vector<avx512::GemmOperands> operands;
    std::vector<std::pair<int, int64_t>> blocks;  // (product, first row of w)
    for (size_t i = 0; i < products.size(); ++i) {
      const Tensor &x = products[i].x, &w = products[i].w;
      Tensor& y = products[i].y;
      const int64_t T = x.dim(0), K = x.dim(1), N = w.dim(0);
      operands.push_back({.x = rounds(products[i]) ? static_cast<const void*>(x_bf16.data() + x_offset[i]) : x.raw(),
                          .x_stride = rounds(products[i]) ? RoundedRowStride(K) : K,
                          .w = w.raw(),
                          .w_stride = K,
                          .y = y.data<float>(),
                          .y_stride = N,
                          .M = T, .N = N, .K = K,
                          .w_bf16 = w.dtype() == DType::kBF16,
                          .bf16_inputs = rounds(products[i])});
      if (T == 0) continue;
      for (int64_t n = 0; n < N; n += avx512::kColumnBlock) blocks.emplace_back(static_cast<int>(i), n);
    }
    const int64_t num_blocks = blocks.size();
    const int num_products = products.size();
    uint16_t* const x_round = x_bf16.data();  // thread_local: the calling thread's buffer
#pragma omp parallel if (parallel)
    {
#pragma omp for schedule(static)
      for (int i = 0; i < num_products; ++i) {
        const Tensor& x = products[i].x;
        if (!operands[i].bf16_inputs) continue;
        for (int64_t t = 0; t < x.dim(0); ++t) {
          avx512::RoundToBf16(x.Row<float>(t), x_round + x_offset[i] + t * operands[i].x_stride, x.dim(1));
        }
      }
#pragma omp for schedule(static)
      for (int64_t b = 0; b < num_blocks; ++b) {
        const auto [i, n] = blocks[b];
        avx512::GemmColumns(operands[i], n, std::min(operands[i].N, n + avx512::kColumnBlock));
      }
    }
    return;
  }

  for (const LinearProduct& p : products) {
    if (p.x.dim(0) == 0) continue;
    // Portable: rounded inputs are rounded first.
    if (rounds(p)) {
      PortableLinear(p.x.To(DType::kBF16).To(DType::kF32), p.w, p.y, parallel);
    } else {
      PortableLinear(p.x, p.w, p.y, parallel);
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
