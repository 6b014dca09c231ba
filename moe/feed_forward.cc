#include "moe/feed_forward.h"

#include <cmath>

#include "moe/dispatch.h"
#include "moe/experts.h"
#include "runtime/cpu/linear.h"
#include "runtime/status_macros.h"

namespace moe {
namespace {

// A single always-on expert (a dense MLP or the shared expert): x [T, D] -> out [T, D].
void Dense(const ExpertWeights& mlp, cpu::GemmInputs inputs, const Tensor& x, Tensor& out) {
  RunExperts(mlp, inputs, x, {0, static_cast<int32_t>(x.dim(0))}, out);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> FeedForward(const FeedForwardWeights& w,
                                                 const FeedForwardContext& context, const Tensor& x,
                                                 Tensor& out) {
  const int64_t T = x.dim(0), D = x.dim(1);
  if (!w.is_moe()) {
    Dense(w.experts, context.gemm_inputs, x, out);
    return std::vector<int32_t>();
  }
  const int E = context.num_experts, K = context.routing.top_k;
  Tensor router_logits = Tensor::Empty(DType::kF32, {T, E});  // [T, E]
  cpu::Linear(x, w.router, router_logits);
  if (context.on_router_logits) context.on_router_logits(router_logits);
  const Routing route = Route(router_logits, context.routing);
  const DispatchPlan plan = Dispatch(route.topk_ids, E);
  Tensor xs = Tensor::Empty(DType::kF32, {T * K, D});  // [T*K, D]
  Tensor ys = Tensor::Empty(DType::kF32, {T * K, D});  // [T*K, D]
  Gather(x, plan, xs);
  std::vector<int32_t> routed(E);
  if (context.group != nullptr) {
    RETURN_IF_ERROR(context.group->RunExperts(w.experts, context.gemm_inputs, xs, plan.expert_offsets, ys, &routed));
  } else {
    RunExperts(w.experts, context.gemm_inputs, xs, plan.expert_offsets, ys);
    for (int e = 0; e < E; ++e) routed[e] = plan.expert_offsets[e + 1] - plan.expert_offsets[e];
  }
  Combine(ys, plan, route.topk_weights, out);

  if (w.has_shared_expert()) {
    Tensor shared = Tensor::Empty(DType::kF32, {T, D});  // [T, D]
    Tensor gate = Tensor::Empty(DType::kF32, {T, 1});    // [T, 1]
    Dense(w.shared, context.gemm_inputs, x, shared);
    cpu::Linear(x, w.shared_gate, gate);
    for (int64_t t = 0; t < T; ++t) {
      const float g = 1.0f / (1.0f + std::exp(-gate.data<float>()[t]));
      const float* s = shared.Row<float>(t);
      float* o = out.Row<float>(t);
      for (int64_t d = 0; d < D; ++d) o[d] += g * s[d];
    }
  }
  return routed;
}

}  // namespace moe
