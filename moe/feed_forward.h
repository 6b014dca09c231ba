// FeedForward: a layer's MLP block, routed experts or dense.
//
// Legend: T tokens, D hidden, E experts, K experts per token, I expert width.
//
//   router_logits = x @ W_router^T                [T, E]
//   topk_ids, topk_weights = Route(router_logits) [T, K]
//   plan = Dispatch(topk_ids)
//   xs = Gather(x, plan)                          [T*K, D]
//   ys = RunExperts(xs, plan)                     [T*K, D]   here, or on the experts' ranks
//   out = Combine(ys, plan, topk_weights)         [T, D]
//   out += sigmoid(x @ W_shared_gate^T) * SharedExpert(x)   (Qwen2-MoE)
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/expert_parallel.h"
#include "moe/routing.h"
#include "moe/weights.h"
#include "runtime/cpu/linear.h"
#include "runtime/tensor.h"

namespace moe {

struct FeedForwardContext {
  RoutingParams routing;
  // What the bf16 expert weights multiply (the router always meets f32 activations: its
  // top-k decides which experts run, and costs little).
  cpu::GemmInputs gemm_inputs = cpu::GemmInputs::kF32;
  int num_experts = 0;           // E of the model (the weights may hold a rank's share)
  ExpertGroup* group = nullptr;  // experts spread over ranks; null: all of them are here
  // When set, sees the router's logits [T, E] f32 before they are routed.
  std::function<void(const Tensor&)> on_router_logits;
};

// x [T, D] f32 -> out [T, D] f32 (T may be 0: an idle rank's part in the exchange). Returns
// the tokens routed to each expert [E] (summed over ranks under expert parallelism; empty
// for a dense MLP), or the exchange's error.
absl::StatusOr<std::vector<int32_t>> FeedForward(const FeedForwardWeights& weights,
                                                 const FeedForwardContext& context, const Tensor& x,
                                                 Tensor& out);

}  // namespace moe
