// RouteAndDispatch: Route, Dispatch and the routed-token count of a small step in one
// launch of one block. A decode step routes a few tokens, so the three separate launches
// (four kernels) of the general path would be mostly launch latency.
//
// Legend: T tokens, E experts, K experts per token, N = T*K dispatched rows.
//
//   topk_ids, topk_weights = Route(router_logits)     [T, K]   (routing.h)
//   plan = Dispatch(topk_ids)                          offsets [E+1], source_token [N], row_of [N]
//   routed.counts[e] += rows of e from tokens t < *routed.num_tokens
//
// The outputs equal those of Route then Dispatch bit for bit: the routing runs the same
// per-token warp code (route_token.cuh), and the plan is the same stable one (rows grouped
// by expert, in t*K + k order), built with per-warp match masks instead of per-expert
// passes.
//
// Limits (checked): N <= kRouteDispatchMaxRows, and Route's E <= 256, K <= 16.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "moe/cuda/dispatch.h"
#include "moe/cuda/expert_load.h"
#include "moe/cuda/routing.h"

namespace moe::cuda {

inline constexpr int32_t kRouteDispatchMaxRows = 1024;  // one thread of the block per row

struct RouteDispatchArgs {
  RouteArgs route;           // router logits in; topk_ids, topk_weights written
  DeviceDispatchPlan plan;   // written
  RoutedTokenCount routed;   // counts null: not counted
};

void RouteAndDispatch(const RouteDispatchArgs& args, cudaStream_t stream);

}  // namespace moe::cuda
