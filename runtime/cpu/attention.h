// Paged attention on the CPU: the reference every attention kernel is tested against.
//
// Keys and values live in the paged cache [blocks, block_size, KVH, hd]; a query token at
// position p of sequence s attends causally to positions [max(0, p - window + 1), p] of s,
// found through s's block table. GQA: query head h reads KV head h / (H / KVH).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/step_batch.h"
#include "runtime/tensor.h"

namespace moe::cpu {

struct AttentionParams {
  float scale = 1.0f;          // usually 1/sqrt(hd)
  int32_t sliding_window = 0;  // keys within this many positions of the query; 0 = all
};

// k, v [T, KVH, hd] f32 -> key_cache, value_cache at batch.slot_mapping.
void WriteKv(const Tensor& k, const Tensor& v, const StepBatch& batch, Tensor& key_cache,
             Tensor& value_cache);

// q [T, H, hd] f32 -> out [T, H, hd] f32.
void PagedAttention(const Tensor& q, const Tensor& key_cache, const Tensor& value_cache,
                    const StepBatch& batch, const AttentionParams& params, Tensor& out);

}  // namespace moe::cpu
