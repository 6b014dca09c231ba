// The weights of an MoE transformer, loaded from a Hugging Face checkpoint.
//
// Legend: V vocab, D hidden, H heads, KVH kv heads, hd head dim, E experts, I expert width.
//
// Experts are stacked per layer at load time, whatever the checkpoint holds: per-expert
// tensors (Qwen gate_proj/up_proj/down_proj, Mixtral w1/w3/w2) or already fused ones.
// GEMM weights stay in the checkpoint's dtype where the CPU kernels read it (f32, bf16) and
// are widened to f32 otherwise; norms and biases are f32. Every tensor's shape is checked
// against the config, and errors name the tensor, the file and what was expected.
//
//   ASSIGN_OR_RETURN(ModelWeights w, LoadWeights(config, checkpoint));
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "moe/config.h"
#include "runtime/checkpoint.h"
#include "runtime/tensor.h"

namespace moe {

struct AttentionWeights {
  Tensor q_proj;  // [H*hd, D]
  Tensor k_proj;  // [KVH*hd, D]
  Tensor v_proj;  // [KVH*hd, D]
  Tensor o_proj;  // [D, H*hd]
  Tensor q_bias;  // [H*hd] f32, if attention_bias
  Tensor k_bias;  // [KVH*hd] f32, if attention_bias
  Tensor v_bias;  // [KVH*hd] f32, if attention_bias
  Tensor q_norm;  // [hd] (per head) or [H*hd] (whole projection) f32, if qk_norm
  Tensor k_norm;  // [hd] or [KVH*hd] f32, if qk_norm
};

// E SwiGLU experts: down(silu(gate(x)) * up(x)). Under expert parallelism E is this rank's
// share, experts [first, first + E) of the layer.
struct ExpertWeights {
  Tensor gate_up;  // [E, 2I, D]: rows [0, I) gate, [I, 2I) up
  Tensor down;     // [E, D, I]
  int num_experts() const { return static_cast<int>(gate_up.dim(0)); }
  int intermediate() const { return static_cast<int>(down.dim(2)); }
};

// A layer's feed-forward block: routed experts, or a dense MLP stored as one expert.
struct FeedForwardWeights {
  Tensor router;          // [E, D], undefined for a dense MLP
  ExpertWeights experts;  // [E, ...] routed experts, or E = 1 for a dense MLP
  ExpertWeights shared;   // Qwen2-MoE shared expert (E = 1), if any
  Tensor shared_gate;     // [1, D], gates the shared expert with a sigmoid
  bool is_moe() const { return router.defined(); }
  bool has_shared_expert() const { return shared.gate_up.defined(); }
};

struct LayerWeights {
  Tensor input_norm;           // [D] f32
  AttentionWeights attention;
  Tensor post_attention_norm;  // [D] f32
  FeedForwardWeights ffn;
};

struct ModelWeights {
  Tensor embed_tokens;  // [V, D]
  std::vector<LayerWeights> layers;
  Tensor final_norm;    // [D] f32
  Tensor lm_head;       // [V, D], the embedding itself when tied
};

// The routed experts [begin, end) of every MoE layer (expert parallelism: a rank loads only
// its own); the default is all of them.
struct ExpertRange {
  int begin = 0;
  int end = -1;  // -1: num_experts
};

// Routed experts outside `experts` are not read at all, so with a memory-mapped checkpoint
// their pages never become resident.
absl::StatusOr<ModelWeights> LoadWeights(const MoeConfig& config, const Checkpoint& checkpoint,
                                         ExpertRange experts = {});

}  // namespace moe
