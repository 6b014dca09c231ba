// SelfAttention: a layer's attention block over the paged KV cache.
//
// Legend: T tokens, D hidden, H heads, KVH kv heads, hd head dim.
//
//   q = x @ Wq^T (+ bq)   [T, H*hd]     k, v = x @ Wk^T, x @ Wv^T (+ b)   [T, KVH*hd]
//   q/k RMSNorm: per head (Qwen3) or over the whole projection (OLMoE); clip (OLMoE)
//   RoPE(q, k) at the tokens' positions
//   write k, v into the cache at slot_mapping; attend over the paged cache   [T, H, hd]
//   out = attn @ Wo^T     [T, D]
#pragma once

#include "moe/config.h"
#include "moe/weights.h"
#include "runtime/step_batch.h"
#include "runtime/cpu/linear.h"
#include "runtime/tensor.h"

namespace moe {

struct LayerKv {
  Tensor& key;    // [blocks, block_size, KVH, hd] f32
  Tensor& value;  // [blocks, block_size, KVH, hd] f32
};

// x [T, D] f32 -> out [T, D] f32.
// `inputs`: what the bf16 projection weights multiply.
void SelfAttention(const AttentionWeights& w, const MoeConfig& config, cpu::GemmInputs inputs, const Tensor& x,
                   const StepBatch& batch, LayerKv kv, Tensor& out);

}  // namespace moe
