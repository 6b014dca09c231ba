// Route on the GPU: one fused kernel from router logits to each token's top-k experts.
// The CPU reference is moe/routing.h (same scoring, same tie-breaking, same order).
//
// Legend: T tokens, E experts, K experts per token.
//
//   scores = softmax(router_logits) | sigmoid(router_logits)   [T, E] f32
//   topk_ids, topk_weights = top-k(scores)                     [T, K]  ties -> lower index
//   if renormalize: topk_weights /= sum_k topk_weights          (summed in k order)
//
// Limits: E <= 256, K <= 16 (checked). One warp per token; the softmax sum is a warp
// reduction, so weights match the CPU to a few ulp while ids match exactly (ties are
// exact on both sides: equal logits give bit-equal scores).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "moe/routing.h"

namespace moe::cuda {

using ::moe::ScoringFunc;

inline constexpr int32_t kRouteMaxExperts = 256;
inline constexpr int32_t kRouteMaxTopK = 16;

struct RouteArgs {
  const float* router_logits;  // [T, E] f32
  int32_t* topk_ids;           // [T, K] in descending weight order
  float* topk_weights;         // [T, K]
  int32_t num_tokens = 0;      // T
  int32_t num_experts = 0;     // E <= kRouteMaxExperts
  int32_t top_k = 0;           // K <= min(E, kRouteMaxTopK)
  ScoringFunc scoring = ScoringFunc::kSoftmax;
  bool renormalize = false;
};

void Route(const RouteArgs& args, cudaStream_t stream);

}  // namespace moe::cuda
