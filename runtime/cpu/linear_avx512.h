// The AVX-512 GEMM behind cpu::Linear, chosen at run time where the CPU has AVX-512 BF16
// (Zen 4, Sapphire Rapids and later). Internal to runtime/cpu.
//
// Every output element is one dot product over K, always in the same order: 16 f32 lanes
// each sum a fixed stride of K in sequence, masked at the tail, and then the lanes are summed
// by one fixed tree. Tiles only choose how many dot products run side by side, never their
// order, so a row's result does not depend on the number of rows, their order, or the tile it
// fell in.
#pragma once

#include <cstdint>

namespace moe::cpu::avx512 {

bool Available();

// Rows of w a thread takes at a time, kept hot in L2 while every row of x passes them: a
// multiple of every tile's width (4 x 6, 3 x 4, 2 x 6 and 1 x 8 from three rows of x on).
inline constexpr int64_t kColumnBlock = 48;

// One matrix's operands: y [M, N] = x [M, K] . w [N, K]^T, rows `*_stride` elements apart.
struct GemmOperands {
  const void* x;  // f32, or bf16 where `bf16_inputs`
  int64_t x_stride;
  const void* w;  // f32 or bf16 as `w_bf16` says
  int64_t w_stride;
  float* y;
  int64_t y_stride;
  int64_t M, N, K;
  bool w_bf16;
  bool bf16_inputs;  // x and w are both bf16: products by VDPBF16PS, f32 sums
};

// Rows [n_begin, n_end) of w against all M rows of x.
void GemmColumns(const GemmOperands& g, int64_t n_begin, int64_t n_end);

// f32 -> bf16, round to nearest even (`count` elements).
void RoundToBf16(const float* src, uint16_t* dst, int64_t count);

}  // namespace moe::cpu::avx512
