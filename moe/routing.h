// Route: the gating network's choice of experts for each token.
//
// Legend: T tokens, E experts, K experts per token.
//
//   probs = softmax(router_logits) | sigmoid(router_logits)   [T, E] f32
//   topk_ids, topk_weights = top-k(probs)                     [T, K]  ties -> lower expert index
//   if renormalize: topk_weights /= sum_k topk_weights
#pragma once

#include <functional>

#include "runtime/tensor.h"

namespace moe {

// How router logits become expert scores: softmax over the experts (Mixtral, Qwen, OLMoE)
// or an independent sigmoid per expert.
enum class ScoringFunc { kSoftmax, kSigmoid };

struct RoutingParams {
  int top_k = 0;
  bool renormalize = false;
  ScoringFunc scoring = ScoringFunc::kSoftmax;
};

struct Routing {
  Tensor topk_ids;      // [T, K] i32, in descending weight order
  Tensor topk_weights;  // [T, K] f32
};

// router_logits [T, E] f32.
Routing Route(const Tensor& router_logits, const RoutingParams& params);

// Sees one MoE layer's router logits [T, E] f32 (T the step's tokens) before they are
// routed. The CPU and CUDA models take one, for tests and debugging.
using RouterObserver = std::function<void(int layer, const Tensor& router_logits)>;

}  // namespace moe
