#include "moe/cuda/moe_layer.h"

#include "absl/strings/str_cat.h"
#include "moe/cuda/dispatch.h"
#include "moe/cuda/expert_load.h"
#include "moe/cuda/experts.h"
#include "moe/cuda/route_dispatch.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/status_macros.h"

namespace moe::cuda {

absl::StatusOr<MoeLayer> MoeLayer::Create(const MoeLayerShape& s) {
  if (s.max_tokens < 1 || s.hidden < 1 || s.num_experts < 1 || s.top_k < 1 || s.top_k > s.num_experts ||
      s.intermediate < 1) {
    return absl::InvalidArgumentError(absl::StrCat("MoE layer needs positive sizes and top_k <= experts; got T ",
                                                   s.max_tokens, ", D ", s.hidden, ", E ", s.num_experts, ", K ",
                                                   s.top_k, ", I ", s.intermediate));
  }
  MoeLayer m;
  m.shape_ = s;
  const int64_t T = s.max_tokens, E = s.num_experts, K = s.top_k, N = T * K;
  ASSIGN_OR_RETURN(m.router_logits_, DeviceTensor::Empty(DType::kF32, {T, E}));
  ASSIGN_OR_RETURN(m.topk_ids_, DeviceTensor::Empty(DType::kI32, {T, K}));
  ASSIGN_OR_RETURN(m.topk_weights_, DeviceTensor::Empty(DType::kF32, {T, K}));
  ASSIGN_OR_RETURN(m.expert_offsets_, DeviceTensor::Empty(DType::kI32, {E + 1}));
  ASSIGN_OR_RETURN(m.source_token_, DeviceTensor::Empty(DType::kI32, {N}));
  ASSIGN_OR_RETURN(m.row_of_, DeviceTensor::Empty(DType::kI32, {N}));
  ASSIGN_OR_RETURN(m.ys_, DeviceTensor::Empty(DType::kF32, {N, s.hidden}));
  const int64_t dispatch = DispatchWorkspaceBytes(s.max_tokens, s.top_k, s.num_experts);
  const int64_t experts = ExpertsWorkspaceBytes(static_cast<int32_t>(N), s.num_experts, s.intermediate);
  ASSIGN_OR_RETURN(m.dispatch_workspace_, DeviceTensor::Empty(DType::kI32, {dispatch / 4 + 1}));
  ASSIGN_OR_RETURN(m.experts_workspace_, DeviceTensor::Empty(DType::kI32, {experts / 4 + 1}));
  return m;
}

absl::Status MoeLayer::Run(const Blas& blas, cudaStream_t stream, const DeviceTensor& h, int32_t T,
                           const DeviceTensor& router, const DeviceExpertWeights& experts, DeviceTensor& out,
                           const RoutedTokenCount* routed, ExpertExchange* exchange) {
  const MoeLayerShape& s = shape_;
  const int32_t held = exchange != nullptr ? exchange->shard().count() : s.num_experts;
  if (T < 0 || T > s.max_tokens || experts.num_experts() != held ||
      experts.intermediate() != s.intermediate || out.dtype() != DType::kF32 || out.dim(0) < T) {
    return absl::InvalidArgumentError(absl::StrCat("MoE layer made for ", s.max_tokens, " tokens, ", s.num_experts,
                                                   " experts of width ", s.intermediate, " got ", T, " tokens, ",
                                                   experts.num_experts(), " experts of width ",
                                                   experts.intermediate()));
  }
  if (T == 0 && exchange == nullptr) return absl::OkStatus();
  if (T == 0) {  // an idle rank: no rows of its own, but its experts serve the others
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(expert_offsets_.raw(), 0, expert_offsets_.nbytes(), stream));
    return exchange->Run({.h = &h, .expert_offsets = &expert_offsets_, .source_token = &source_token_, .tokens = 0,
                          .local = &experts, .path = s.experts_path, .auto_prefill = s.auto_prefill, .ys = &ys_},
                         stream);
  }
  RETURN_IF_ERROR(blas.Linear(h, router, router_logits_, T));
  const RouteArgs route{.router_logits = router_logits_.data<float>(), .topk_ids = topk_ids_.data<int32_t>(),
                        .topk_weights = topk_weights_.data<float>(), .num_tokens = T, .num_experts = s.num_experts,
                        .top_k = s.top_k, .scoring = s.scoring, .renormalize = s.renormalize};
  const DeviceDispatchPlan plan{.expert_offsets = expert_offsets_.data<int32_t>(),
                                .source_token = source_token_.data<int32_t>(),
                                .row_of = row_of_.data<int32_t>()};
  if (int64_t{T} * s.top_k <= kRouteDispatchMaxRows) {  // a decode step: one launch
    RouteAndDispatch({.route = route, .plan = plan, .routed = routed != nullptr ? *routed : RoutedTokenCount{}},
                     stream);
  } else {
    Route(route, stream);
    Dispatch({.topk_ids = route.topk_ids, .plan = plan, .num_tokens = T, .top_k = s.top_k,
              .num_experts = s.num_experts}, dispatch_workspace_.raw(), stream);
    if (routed != nullptr) AccumulateRoutedTokens(route.topk_ids, T, s.top_k, s.num_experts, *routed, stream);
  }
  if (exchange != nullptr) {
    RETURN_IF_ERROR(exchange->Run({.h = &h, .expert_offsets = &expert_offsets_, .source_token = &source_token_,
                                   .tokens = T, .local = &experts, .path = s.experts_path,
                                   .auto_prefill = s.auto_prefill, .ys = &ys_},
                                  stream));
  } else {
    RunExperts({.x = h.data<__nv_bfloat16>(), .expert_offsets = plan.expert_offsets,
                .source_token = plan.source_token, .gate_up = experts.gate_up.data<__nv_bfloat16>(),
                .down = experts.down.data<__nv_bfloat16>(), .ys = ys_.data<float>(), .num_tokens = T,
                .num_rows = T * s.top_k, .num_experts = s.num_experts, .hidden = s.hidden,
                .intermediate = s.intermediate, .path = s.experts_path,
                .auto_prefill = s.auto_prefill}, experts_workspace_.raw(), stream);
  }
  Combine({.ys = ys_.data<float>(), .row_of = plan.row_of, .topk_weights = topk_weights_.data<float>(),
           .out = out.data<float>(), .num_tokens = T, .top_k = s.top_k, .hidden = s.hidden}, stream);
  return absl::OkStatus();
}

}  // namespace moe::cuda
