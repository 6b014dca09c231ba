// Route on the GPU: one fused kernel from router logits to each token's top-k experts.
// The CPU reference is moe/routing.h.
//
// Legend: T tokens, E experts, K experts per token.
//
//   scores = softmax(router_logits) | sigmoid(router_logits)   [T, E] f32
//   topk_ids, topk_weights = top-k(scores)                     [T, K]  ties -> lower index
//   if renormalize: topk_weights /= sum_k topk_weights
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace moe::cuda {

enum class ScoringFunc { kSoftmax, kSigmoid };

struct RouteArgs {
  const float* router_logits;  // [T, E] f32
  int32_t* topk_ids;           // [T, K] in descending weight order
  float* topk_weights;         // [T, K]
  int32_t num_tokens = 0;      // T
  int32_t num_experts = 0;     // E
  int32_t top_k = 0;           // K <= E
  ScoringFunc scoring = ScoringFunc::kSoftmax;
  bool renormalize = false;
};

void Route(const RouteArgs& args, cudaStream_t stream);

}  // namespace moe::cuda
