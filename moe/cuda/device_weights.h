// DeviceWeights: an MoE transformer's weights on the GPU, bf16 for GEMMs, f32 for norms
// and biases, uploaded from the host ModelWeights (moe/weights.h) or made at random at
// real shapes for benchmarks.
//
// Legend: V vocab, D hidden, H heads, KVH kv heads, hd head dim, E experts, I expert width.
//
//   ASSIGN_OR_RETURN(DeviceWeights w, UploadWeights(config, host_weights));
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/config.h"
#include "moe/weights.h"
#include "runtime/cuda/device_tensor.h"

namespace moe::cuda {

struct DeviceAttentionWeights {
  DeviceTensor qkv_proj;  // [(H + 2 KVH) hd, D] bf16: q, k, v projections stacked
  DeviceTensor o_proj;    // [D, H*hd] bf16
  DeviceTensor q_bias, k_bias, v_bias;  // [H*hd], [KVH*hd] x2 f32, if attention_bias
  DeviceTensor q_norm, k_norm;          // [hd] or [H*hd] / [KVH*hd] f32, if qk_norm
};

struct DeviceExpertWeights {
  DeviceTensor gate_up;  // [E, 2I, D] bf16
  DeviceTensor down;     // [E, D, I] bf16
  bool defined() const { return gate_up.defined(); }
  int num_experts() const { return static_cast<int>(gate_up.dim(0)); }
  int intermediate() const { return static_cast<int>(down.dim(2)); }
};

struct DeviceFeedForwardWeights {
  DeviceTensor router;           // [E, D] bf16, undefined for a dense MLP
  DeviceExpertWeights experts;   // routed experts, or E = 1 for a dense MLP
  DeviceExpertWeights shared;    // Qwen2-MoE shared expert (E = 1), if any
  DeviceTensor shared_gate;      // [1, D] bf16
  bool is_moe() const { return router.defined(); }
};

struct DeviceLayerWeights {
  DeviceTensor input_norm;           // [D] f32
  DeviceAttentionWeights attention;
  DeviceTensor post_attention_norm;  // [D] f32
  DeviceFeedForwardWeights ffn;
};

struct DeviceWeights {
  DeviceTensor embed_tokens;  // [V, D] bf16
  std::vector<DeviceLayerWeights> layers;
  DeviceTensor final_norm;    // [D] f32
  DeviceTensor lm_head;       // [V, D] bf16 (shares the embedding's memory when tied)
  int64_t bytes = 0;          // device memory held
};

absl::StatusOr<DeviceWeights> UploadWeights(const MoeConfig& config, const ModelWeights& host);

// Weights at the config's shapes, uniform in +-scale/sqrt(fan_in) from a fixed seed, made
// on the device (no checkpoint needed, so a 48-layer model fits where its files would not).
absl::StatusOr<DeviceWeights> RandomDeviceWeights(const MoeConfig& config, uint64_t seed);

}  // namespace moe::cuda
