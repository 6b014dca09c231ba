// Route on the GPU: one warp per token turns its router logits into top-k experts
// (route_token.cuh).
#include "moe/cuda/routing.h"

#include "moe/cuda/kernel_util.cuh"
#include "moe/cuda/route_token.cuh"
#include "runtime/check.h"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = kWarpsPerBlock * kWarpSize;

// One warp per token. No block-level synchronization, so a warp past T may return early.
__global__ void __launch_bounds__(kThreads) RouteKernel(const RouteArgs args) {
  AwaitPrecedingKernels();
  const int lane = threadIdx.x % kWarpSize;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (t >= args.num_tokens) return;  // the whole warp leaves together
  const routing_internal::Choice choice = routing_internal::RouteToken(args, t, lane);
  if (lane < args.top_k) {
    args.topk_ids[t * args.top_k + lane] = choice.expert;
    args.topk_weights[t * args.top_k + lane] = choice.weight;
  }
}

}  // namespace

void Route(const RouteArgs& args, cudaStream_t stream) {
  CHECK(args.num_tokens >= 0) << "num_tokens " << args.num_tokens;
  CHECK(args.num_experts >= 1 && args.num_experts <= kRouteMaxExperts)
      << "Route supports 1.." << kRouteMaxExperts << " experts, got " << args.num_experts;
  CHECK(args.top_k >= 1 && args.top_k <= args.num_experts && args.top_k <= kRouteMaxTopK)
      << "top_k " << args.top_k << " with " << args.num_experts << " experts (at most "
      << kRouteMaxTopK << ")";
  if (args.num_tokens == 0) return;
  CHECK(args.router_logits != nullptr && args.topk_ids != nullptr && args.topk_weights != nullptr);
  const int64_t blocks = CeilDiv(args.num_tokens, kWarpsPerBlock);
  Launch(RouteKernel, static_cast<unsigned>(blocks), kThreads, 0, stream, args);
}

}  // namespace moe::cuda
