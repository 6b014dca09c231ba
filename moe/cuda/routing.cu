// Route on the GPU: one warp per token turns its router logits into top-k experts.
//
// Lane l holds the scores of experts l, l + 32, ..., l + 224 (kPerLane = 8 slots, so
// E <= 256). Top-k is K rounds of a warp argmax over the experts not yet taken; the argmax
// orders candidates by score, then by lower expert index, which is what the CPU's
// ascending scan with a strict `>` picks.
#include "moe/cuda/routing.h"

#include <cmath>

#include "moe/cuda/kernel_util.cuh"
#include "runtime/check.h"
#include "runtime/cuda/cuda_check.h"

namespace moe::cuda {
namespace {

constexpr int kPerLane = kRouteMaxExperts / kWarpSize;  // expert slots per lane
constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = kWarpsPerBlock * kWarpSize;
static_assert(kRouteMaxExperts % kWarpSize == 0);
static_assert(kRouteMaxTopK <= kWarpSize, "lane k keeps the k-th choice");

// True when candidate (score_a, expert_a) beats (score_b, expert_b): a valid candidate
// (expert >= 0) beats an invalid one; a higher score wins; equal scores go to the lower
// expert. A strict total order on valid, non-NaN candidates, so any reduction tree finds
// the same winner.
__device__ __forceinline__ bool Beats(float score_a, int expert_a, float score_b, int expert_b) {
  if (expert_a < 0) return false;
  if (expert_b < 0) return true;
  return score_a > score_b || (score_a == score_b && expert_a < expert_b);
}

// Scores of the lane's slots; slots past E are marked taken so they never compete.
__device__ __forceinline__ void ComputeScores(const float* logits, int num_experts, int lane,
                                              ScoringFunc scoring, float (&score)[kPerLane],
                                              uint32_t& taken) {
  taken = 0;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int e = lane + kWarpSize * i;
    score[i] = e < num_experts ? logits[e] : -INFINITY;
    if (e >= num_experts) taken |= 1u << i;
  }
  if (scoring == ScoringFunc::kSigmoid) {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) score[i] = 1.0f / (1.0f + expf(-score[i]));
    return;
  }
  float max_logit = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) max_logit = fmaxf(max_logit, score[i]);
  max_logit = WarpMax(max_logit);
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    // exp(-inf - max) = 0 for the padding slots, so they add nothing to the sum.
    score[i] = (taken >> i & 1u) ? 0.0f : expf(score[i] - max_logit);
    sum += score[i];
  }
  sum = WarpSum(sum);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) score[i] /= sum;
}

// One warp per token. No block-level synchronization, so a warp past T may return early.
__global__ void __launch_bounds__(kThreads) RouteKernel(const RouteArgs args) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (t >= args.num_tokens) return;  // the whole warp leaves together
  const int E = args.num_experts, K = args.top_k;

  float score[kPerLane];
  uint32_t taken;  // bit i: slot i (expert lane + 32 i) is chosen or does not exist
  ComputeScores(args.router_logits + t * E, E, lane, args.scoring, score, taken);

  int my_id = 0;  // lane k keeps the k-th choice
  float my_weight = 0.0f;
  float chosen_sum = 0.0f;  // summed in k order on every lane, as the CPU does
  for (int k = 0; k < K; ++k) {
    // The lane's own best: ascending slots (ascending experts), strict '>'.
    float best_score = 0.0f;
    int best_expert = -1;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int e = lane + kWarpSize * i;
      if (!(taken >> i & 1u) && Beats(score[i], e, best_score, best_expert)) {
        best_score = score[i];
        best_expert = e;
      }
    }
    // Reduce to lane 0, then broadcast: every lane agrees on the winner even with NaNs.
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      const float other_score = __shfl_down_sync(0xffffffffu, best_score, offset);
      const int other_expert = __shfl_down_sync(0xffffffffu, best_expert, offset);
      if (Beats(other_score, other_expert, best_score, best_expert)) {
        best_score = other_score;
        best_expert = other_expert;
      }
    }
    best_score = __shfl_sync(0xffffffffu, best_score, 0);
    best_expert = __shfl_sync(0xffffffffu, best_expert, 0);
    // K <= E leaves at least one untaken expert, so best_expert >= 0 here.
    if (best_expert % kWarpSize == lane) taken |= 1u << (best_expert / kWarpSize);
    if (k == lane) {
      my_id = best_expert;
      my_weight = best_score;
    }
    chosen_sum += best_score;
  }
  if (lane < K) {
    args.topk_ids[t * K + lane] = my_id;
    args.topk_weights[t * K + lane] = args.renormalize ? my_weight / chosen_sum : my_weight;
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
  RouteKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moe::cuda
