// RouteAndDispatch: one block of 1024 threads, one dispatched row per thread.
//
//   1. route:  warp w routes tokens w, w + 32, ... (route_token.cuh); ids land in shared memory
//   2. count:  thread i holds row i = t*K + k; the lanes of a warp holding the same expert
//              find each other with one match; the lowest of them writes the warp's count
//   3. scan:   per expert over the warps (exclusive: rows of e in lower warps), then over the
//              experts (expert_offsets)
//   4. place:  row = offsets[e] + rows of e in lower warps + rows of e in lower lanes
// Counts and ranks are integers that do not depend on scheduling, so the plan is the
// deterministic, stable one that Dispatch builds.
#include "moe/cuda/route_dispatch.h"

#include "moe/cuda/kernel_util.cuh"
#include "moe/cuda/route_token.cuh"
#include "runtime/check.h"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda {
namespace {

constexpr int kThreads = kRouteDispatchMaxRows;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kExpertsPerLane = kRouteMaxExperts / kWarpSize;  // of warp 0's scan
static_assert(kThreads % kWarpSize == 0 && kThreads >= kRouteMaxExperts);

__global__ void __launch_bounds__(kThreads) RouteDispatchKernel(const RouteDispatchArgs args) {
  AwaitPrecedingKernels();
  __shared__ int32_t ids[kThreads];                        // [N] chosen experts, at t*K + k
  __shared__ int32_t warp_rows[kWarps][kRouteMaxExperts];  // [32, E] rows of e in warp w's
                                                           // ids, then those in lower warps
  __shared__ int32_t offsets[kRouteMaxExperts + 1];        // [E+1] rows of e at e+1, then
                                                           // expert_offsets
  const RouteArgs& route = args.route;
  const int32_t E = route.num_experts, K = route.top_k, N = route.num_tokens * K;
  const int i = threadIdx.x, lane = i % kWarpSize, warp = i / kWarpSize;
  for (int j = i; j < kWarps * E; j += kThreads) warp_rows[j / E][j % E] = 0;

  // 1. Route.
  for (int32_t t = warp; t < route.num_tokens; t += kWarps) {  // warp-uniform
    const routing_internal::Choice choice = routing_internal::RouteToken(route, t, lane);
    if (lane < K) {
      route.topk_ids[t * K + lane] = choice.expert;
      route.topk_weights[t * K + lane] = choice.weight;
      ids[t * K + lane] = choice.expert;
    }
  }
  __syncthreads();

  // 2. Count per warp. An id outside [0, E) (RouteToken never gives one) is dropped as
  // Dispatch drops it: counted for no expert, row_of -1.
  const int32_t e = i < N ? ids[i] : -1;
  const bool valid = e >= 0 && e < E;
  const uint32_t peers = __match_any_sync(0xffffffffu, valid ? e : -1);  // lanes with my id
  const uint32_t lanes_below = (1u << lane) - 1u;
  const bool leader = valid && (peers & lanes_below) == 0;
  if (leader) warp_rows[warp][e] = __popc(peers);
  if (args.routed.counts != nullptr) {
    const bool real = i < N && i / K < *args.routed.num_tokens;  // not a graph's padding
    const uint32_t real_peers = peers & __ballot_sync(0xffffffffu, real);
    if (leader && real_peers != 0) {
      atomicAdd(reinterpret_cast<unsigned long long*>(args.routed.counts + e),
                static_cast<unsigned long long>(__popc(real_peers)));
    }
  }
  __syncthreads();

  // 3. Scan over the warps (one thread per expert), then over the experts (warp 0; lane l
  // takes experts [8l, 8l + 8)).
  if (i < E) {
    int32_t below = 0;
    for (int w = 0; w < kWarps; ++w) {
      const int32_t rows = warp_rows[w][i];
      warp_rows[w][i] = below;
      below += rows;
    }
    offsets[i + 1] = below;
  }
  __syncthreads();
  if (warp == 0) {
    int32_t rows[kExpertsPerLane];
    int32_t mine = 0;
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j) {
      const int32_t x = lane * kExpertsPerLane + j;
      rows[j] = x < E ? offsets[x + 1] : 0;
      mine += rows[j];
    }
    int32_t inclusive = mine;
#pragma unroll
    for (int d = 1; d < kWarpSize; d *= 2) {
      const int32_t lower = __shfl_up_sync(0xffffffffu, inclusive, d);
      if (lane >= d) inclusive += lower;
    }
    int32_t end = inclusive - mine;
#pragma unroll
    for (int j = 0; j < kExpertsPerLane; ++j) {
      const int32_t x = lane * kExpertsPerLane + j;
      end += rows[j];
      if (x < E) offsets[x + 1] = end;
    }
    if (lane == 0) offsets[0] = 0;
  }
  __syncthreads();
  if (i <= E) args.plan.expert_offsets[i] = offsets[i];

  // 4. Place.
  if (i < N) {
    if (valid) {
      const int32_t row = offsets[e] + warp_rows[warp][e] + __popc(peers & lanes_below);
      args.plan.row_of[i] = row;
      args.plan.source_token[row] = i / K;
    } else {
      args.plan.row_of[i] = -1;
    }
  }
}

}  // namespace

void RouteAndDispatch(const RouteDispatchArgs& args, cudaStream_t stream) {
  const RouteArgs& r = args.route;
  CHECK(r.num_tokens >= 0) << "num_tokens " << r.num_tokens;
  CHECK(r.num_experts >= 1 && r.num_experts <= kRouteMaxExperts)
      << "RouteAndDispatch supports 1.." << kRouteMaxExperts << " experts, got " << r.num_experts;
  CHECK(r.top_k >= 1 && r.top_k <= r.num_experts && r.top_k <= kRouteMaxTopK)
      << "top_k " << r.top_k << " with " << r.num_experts << " experts (at most " << kRouteMaxTopK
      << ")";
  CHECK(int64_t{r.num_tokens} * r.top_k <= kRouteDispatchMaxRows)
      << r.num_tokens << " tokens x top-" << r.top_k << " is more than the "
      << kRouteDispatchMaxRows << " rows of one RouteAndDispatch";
  CHECK(args.plan.expert_offsets != nullptr);
  CHECK(r.num_tokens == 0 || (r.router_logits != nullptr && r.topk_ids != nullptr &&
                              r.topk_weights != nullptr && args.plan.source_token != nullptr &&
                              args.plan.row_of != nullptr));
  CHECK(args.routed.counts == nullptr || args.routed.num_tokens != nullptr);
  // Runs even for T = 0: the offsets (all zero) are still written, as Dispatch does.
  Launch(RouteDispatchKernel, 1, kThreads, 0, stream, args);
}

}  // namespace moe::cuda
