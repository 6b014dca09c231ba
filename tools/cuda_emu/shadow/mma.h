// Emulated nvcuda::wmma for 16x16x16 bf16/f16 fragments with f32 accumulators. Lane l owns
// elements l*8 .. l*8+7 of the 16x16 tile in row-major (i, j) order; loads, stores and
// fills touch only the lane's own elements; mma_sync is a warp collective.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "emu.h"

namespace nvcuda::wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "only 16x16x16 is emulated");
  static constexpr int num_elements = 8;
  float x[8];
};

namespace detail {
inline int Lane() { return static_cast<int>(threadIdx.x % 32); }
inline float ToF(float v) { return v; }
inline float ToF(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float ToF(__half v) { return __half2float(v); }
template <typename T>
void CheckPtr(const T* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) ::emu::Error("wmma %s: pointer %p not 32-byte aligned", what, (const void*)p);
  if ((ldm * sizeof(T)) % 16 != 0) ::emu::Error("wmma %s: ldm %u not a multiple of 16 bytes", what, ldm);
}
}  // namespace detail

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>);
  detail::CheckPtr(p, ldm, "load");
  const int lane = detail::Lane();
  for (int e = 0; e < 8; ++e) {
    const int idx = lane * 8 + e, i = idx / 16, j = idx % 16;  // (row, col) of the logical tile
    // matrix_a is M x K (i = m, j = k); matrix_b is K x N (i = k, j = n).
    f.x[e] = std::is_same_v<Layout, row_major> ? detail::ToF(p[i * ldm + j]) : detail::ToF(p[j * ldm + i]);
  }
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm,
                             layout_t layout) {
  detail::CheckPtr(p, ldm, "load acc");
  const int lane = detail::Lane();
  for (int e = 0; e < 8; ++e) {
    const int idx = lane * 8 + e, i = idx / 16, j = idx % 16;
    f.x[e] = layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i];
  }
}
template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, T v) {
  for (float& e : f.x) e = detail::ToF(v);
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}
template <typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  ::emu::WarpMma(d.x, a.x, b.x, c.x, __FILE__, __LINE__);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  detail::CheckPtr(p, ldm, "store");
  const int lane = detail::Lane();
  for (int e = 0; e < 8; ++e) {
    const int idx = lane * 8 + e, i = idx / 16, j = idx % 16;
    (layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[e];
  }
}
}  // namespace nvcuda::wmma
