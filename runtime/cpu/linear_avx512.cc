#include "runtime/cpu/linear_avx512.h"

// GCC 12 warns inside its own masked-load intrinsics (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>

#define MOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma")))

namespace moe::cpu::avx512 {
namespace {

// x f32 . w f32|bf16: 16 elements of K per step, FMA in f32.
struct F32Inputs {
  static constexpr int64_t kStep = 16;
  MOE_AVX512 static __m512 X(const void* base, int64_t i, __mmask32 m) {
    return _mm512_maskz_loadu_ps(static_cast<__mmask16>(m), static_cast<const float*>(base) + i);
  }
  MOE_AVX512 static __m512 W(bool bf16, const void* base, int64_t i, __mmask32 m) {
    if (!bf16) return _mm512_maskz_loadu_ps(static_cast<__mmask16>(m), static_cast<const float*>(base) + i);
    const __m256i h = _mm256_maskz_loadu_epi16(static_cast<__mmask16>(m), static_cast<const uint16_t*>(base) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  MOE_AVX512 static __m512 Madd(__m512 acc, __m512 x, __m512 w) { return _mm512_fmadd_ps(x, w, acc); }
};

// x bf16 . w bf16: 32 elements of K per step, pairs multiplied and summed in f32 (VDPBF16PS).
struct Bf16Inputs {
  static constexpr int64_t kStep = 32;
  MOE_AVX512 static __m512i X(const void* base, int64_t i, __mmask32 m) {
    return _mm512_maskz_loadu_epi16(m, static_cast<const uint16_t*>(base) + i);
  }
  MOE_AVX512 static __m512i W(bool, const void* base, int64_t i, __mmask32 m) { return X(base, i, m); }
  MOE_AVX512 static __m512 Madd(__m512 acc, __m512i x, __m512i w) {
    return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(x), reinterpret_cast<__m512bh>(w));
  }
};

constexpr __mmask32 kAll = ~__mmask32{0};

// The one lane sum: (i, i+8), then (i, i+4), (i, i+2), (i, i+1).
MOE_AVX512 inline float LaneSum(__m512 v) {
  const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}

// One step of k for an MR x NR tile: MR vectors of x against NR of w, `mask` choosing the
// elements loaded (all of them but at the tail).
template <class In, int MR, int NR>
MOE_AVX512 [[gnu::always_inline]] inline void Step(const char* const (&x)[MR], const char* const (&w)[NR],
                                                  bool w_bf16, int64_t k, __mmask32 mask,
                                                  __m512 (&acc)[MR][NR]) {
  decltype(In::X(nullptr, 0, 0)) xv[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) xv[i] = In::X(x[i], k, mask);
#pragma GCC unroll 8
  for (int j = 0; j < NR; ++j) {
    const auto wv = In::W(w_bf16, w[j], k, mask);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][j] = In::Madd(acc[i][j], xv[i], wv);
  }
}

// y[m0 .. m0+MR, n0 .. n0+NR]: MR x NR dot products side by side.
template <class In, int MR, int NR>
MOE_AVX512 void Tile(const GemmOperands& g, int64_t m0, int64_t n0) {
  const int in_bytes = g.bf16_inputs ? 2 : 4;
  const int w_bytes = g.w_bf16 ? 2 : 4;
  const char* x[MR];
  const char* w[NR];
  for (int i = 0; i < MR; ++i) x[i] = static_cast<const char*>(g.x) + (m0 + i) * g.x_stride * in_bytes;
  for (int j = 0; j < NR; ++j) w[j] = static_cast<const char*>(g.w) + (n0 + j) * g.w_stride * w_bytes;
  // Every loop over the tile unrolled, this one and the last too: GCC keeps the accumulators
  // in registers only then (otherwise it stores all of them at every step).
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  const int64_t full = g.K / In::kStep * In::kStep;
  int64_t k = 0;
  if constexpr (NR == 1) {
    // One row of w at a time (bound by its bytes): kUnroll steps per pass, so that more loads
    // are in flight; every sum still runs in order over k.
    constexpr int kUnroll = MR == 1 ? 8 : 4;
    for (; k + kUnroll * In::kStep <= full; k += kUnroll * In::kStep) {
#pragma GCC unroll 8
      for (int u = 0; u < kUnroll; ++u) Step<In, MR, 1>(x, w, g.w_bf16, k + u * In::kStep, kAll, acc);
    }
  }
  // Whole vectors, then the masked tail: the step is the same, so is every sum's order.
  for (; k < full; k += In::kStep) Step<In, MR, NR>(x, w, g.w_bf16, k, kAll, acc);
  if (k < g.K) {
    const auto tail = static_cast<__mmask32>((uint64_t{1} << (g.K - full)) - 1);
    Step<In, MR, NR>(x, w, g.w_bf16, k, tail, acc);
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) g.y[(m0 + i) * g.y_stride + n0 + j] = LaneSum(acc[i][j]);
}

template <class In, int MR, int NR>
MOE_AVX512 void Rows(const GemmOperands& g, int64_t m0, int64_t n_begin, int64_t n_end) {
  int64_t n = n_begin;
  for (; n + NR <= n_end; n += NR) Tile<In, MR, NR>(g, m0, n);
  for (; n < n_end; ++n) Tile<In, MR, 1>(g, m0, n);
}

template <class In>
MOE_AVX512 void Columns(const GemmOperands& g, int64_t n_begin, int64_t n_end) {
  // One or two rows of x are bound by the bytes of w, so w is read one row at a time against
  // both: one stream of memory, which the prefetchers follow at full bandwidth. (Rows of w
  // side by side are as many streams, 2 to 8 KiB apart, read at about two thirds of it.) From
  // three rows on, tiles of several rows of w win, reusing each load of x.
  if (g.M == 1) return Rows<In, 1, 1>(g, 0, n_begin, n_end);
  if (g.M == 2) return Rows<In, 2, 1>(g, 0, n_begin, n_end);
  for (int64_t nb = n_begin; nb < n_end; nb += kColumnBlock) {
    const int64_t ne = std::min(n_end, nb + kColumnBlock);
    int64_t m = 0;
    for (; m + 4 <= g.M; m += 4) Rows<In, 4, 6>(g, m, nb, ne);
    switch (g.M - m) {
      case 3: Rows<In, 3, 4>(g, m, nb, ne); break;
      case 2: Rows<In, 2, 6>(g, m, nb, ne); break;
      case 1: Rows<In, 1, 8>(g, m, nb, ne); break;
      default: break;
    }
  }
}

}  // namespace

bool Available() {
  static const bool available = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                                __builtin_cpu_supports("avx512bf16");
  return available;
}

MOE_AVX512 void GemmColumns(const GemmOperands& g, int64_t n_begin, int64_t n_end) {
  if (g.bf16_inputs) {
    Columns<Bf16Inputs>(g, n_begin, n_end);
  } else {
    Columns<F32Inputs>(g, n_begin, n_end);
  }
}

MOE_AVX512 void RoundToBf16(const float* src, uint16_t* dst, int64_t count) {
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512(dst + i, reinterpret_cast<__m512i>(v));
  }
  for (; i < count; ++i) {
    const __m128bh v = _mm_cvtneps_pbh(_mm_set_ss(src[i]));
    dst[i] = static_cast<uint16_t>(_mm_extract_epi16(reinterpret_cast<__m128i>(v), 0));
  }
}

}  // namespace moe::cpu::avx512
