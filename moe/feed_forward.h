// FeedForward: a layer's MLP block, routed experts or dense.
//
// Legend: T tokens, D hidden, E experts, K experts per token, I expert width.
//
//   router_logits = x @ W_router^T                [T, E]
//   topk_ids, topk_weights = Route(router_logits) [T, K]
//   plan = Dispatch(topk_ids)
//   xs = Gather(x, plan)                          [T*K, D]
//   ys = RunExperts(xs, plan)                     [T*K, D]
//   out = Combine(ys, plan, topk_weights)         [T, D]
//   out += sigmoid(x @ W_shared_gate^T) * SharedExpert(x)   (Qwen2-MoE)
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "moe/routing.h"
#include "moe/weights.h"
#include "runtime/tensor.h"

namespace moe {

// x [T, D] f32 -> out [T, D] f32. Returns the tokens routed to each expert [E] (empty for
// a dense MLP). `on_router_logits`, when set, sees the router's logits [T, E] f32 before
// they are routed.
std::vector<int32_t> FeedForward(const FeedForwardWeights& weights, const RoutingParams& routing,
                                 const Tensor& x, Tensor& out,
                                 const std::function<void(const Tensor&)>& on_router_logits = {});

}  // namespace moe
