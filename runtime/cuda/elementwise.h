// Element-wise and gather ops on the GPU. The CPU references are in
// runtime/cpu/elementwise.h.
//
// Legend: T tokens, D hidden, V vocab, I MLP width, R gathered rows.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

// out [T, D] f32 = table[token_ids[t]].
struct EmbedArgs {
  const __nv_bfloat16* table;  // [V, D]
  const int32_t* token_ids;    // [T], each in [0, V)
  float* out;                  // [T, D]
  int32_t tokens = 0;          // T
  int32_t hidden = 0;          // D
};
void Embed(const EmbedArgs& args, cudaStream_t stream);

// out [T, I] = silu(gate_up[:, :I]) * gate_up[:, I:], fp32 math.
struct SiluMulArgs {
  const __nv_bfloat16* gate_up;  // [T, 2I]
  __nv_bfloat16* out;            // [T, I]
  int32_t tokens = 0;            // T
  int32_t intermediate = 0;      // I
};
void SiluMul(const SiluMulArgs& args, cudaStream_t stream);

// out [R, D] = x[rows[r]], for f32 or bf16 rows.
template <typename T>
struct GatherRowsOf {
  const T* x;           // [T, D]
  const int32_t* rows;  // [R], each in [0, T)
  T* out;               // [R, D]
  int32_t num_rows = 0; // R
  int32_t hidden = 0;   // D
};
using GatherRowsArgs = GatherRowsOf<float>;
void GatherRows(const GatherRowsOf<float>& args, cudaStream_t stream);
void GatherRows(const GatherRowsOf<__nv_bfloat16>& args, cudaStream_t stream);

// out [T, D] += sigmoid(gate[t]) * y[t]   (Qwen2-MoE's shared expert), or += y when gate
// is null (a dense MLP's output added to a zeroed buffer works the same way).
struct AddGatedArgs {
  const float* y;     // [T, D]
  const float* gate;  // [T] logits, or null
  float* out;         // [T, D]
  int32_t tokens = 0; // T
  int32_t hidden = 0; // D
};
void AddGated(const AddGatedArgs& args, cudaStream_t stream);

// data[i] = offset + scale * u_i, u_i uniform in [-1, 1) from a hash of (seed, i): the same
// values on every run and device.
struct FillUniformArgs {
  void* data;          // [count] bf16 or f32
  bool bf16 = true;    // else f32
  int64_t count = 0;
  uint64_t seed = 0;
  float offset = 0.0f;
  float scale = 1.0f;
};
void FillUniform(const FillUniformArgs& args, cudaStream_t stream);

}  // namespace moe::cuda
