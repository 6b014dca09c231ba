// PrepareQkv: the attention prologue on the GPU, one kernel from the projections' fp32
// outputs to the bf16 q, k, v that attention and the KV cache take. In the order the CPU
// reference (moe/attention_block.cc) applies them:
//
//   q, k, v += bias                                  (if attention_bias)
//   q, k = RMSNorm per head | over the projection    (Qwen3 | OLMoE)
//   q, k, v = clamp(., -clip, clip)                  (OLMoE's clip_qkv)
//   q, k = RoPE(., positions)                        rotate-half, angles as runtime/cpu/rope.cc
//   k, v -> the KV cache rows of their slots         (if kv_slots: WriteKv fused)
//
// Legend: T tokens, H heads, KVH kv heads, hd head dim.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

enum class QkNormKind { kNone, kPerHead, kWholeProjection };

struct PrepareQkvArgs {
  const float* q;             // [T, H*hd] f32 projections, rows `row_stride` apart
  const float* k;             // [T, KVH*hd]
  const float* v;             // [T, KVH*hd]
  int32_t row_stride = 0;     // elements between tokens' rows; 0 = each projection packed.
                              // A fused qkv GEMM output [T, (H + 2 KVH) hd] has q, k, v
                              // at column offsets 0, H*hd, (H + KVH) hd and this stride.
  const float* q_bias = nullptr;  // [H*hd], or null
  const float* k_bias = nullptr;  // [KVH*hd], or null
  const float* v_bias = nullptr;  // [KVH*hd], or null
  QkNormKind qk_norm = QkNormKind::kNone;
  const float* q_norm = nullptr;  // [hd] per head, [H*hd] whole projection
  const float* k_norm = nullptr;  // [hd] per head, [KVH*hd] whole projection
  float eps = 1e-6f;
  float clip = 0.0f;              // 0 = no clamp
  const int32_t* positions;       // [T]
  const float* inv_freq;          // [hd/2] RopeInverseFrequencies
  __nv_bfloat16* q_out;           // [T, H, hd]
  __nv_bfloat16* k_out;           // [T, KVH, hd], or with kv_slots the key cache [slots, KVH, hd]
  __nv_bfloat16* v_out;           // [T, KVH, hd], or with kv_slots the value cache
  // The KV write by slot mapping, fused: token t's k and v go to row kv_slots[t] of k_out
  // and v_out (a paged cache [blocks, block_size, KVH, hd] is [slots, KVH, hd]). Null: row t.
  // A slot outside [0, num_kv_slots) is not written.
  const int64_t* kv_slots = nullptr;  // [T]
  int64_t num_kv_slots = 0;
  int32_t tokens = 0;             // T
  int32_t heads = 0;              // H
  int32_t kv_heads = 0;           // KVH
  int32_t head_dim = 0;           // hd, even
};

// inv_freq[i] = theta^(-2i / hd), rounded to f32 exactly as runtime/cpu/rope.cc does.
std::vector<float> RopeInverseFrequencies(double theta, int head_dim);

void PrepareQkv(const PrepareQkvArgs& args, cudaStream_t stream);

}  // namespace moe::cuda
