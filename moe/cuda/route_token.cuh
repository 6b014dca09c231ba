// Internal to moe/cuda/routing.cu and route_dispatch.cu: one token's routing by one warp.
//
// Lane l holds the scores of experts l, l + 32, ..., l + 224 (kPerLane = 8 slots, so
// E <= 256). Top-k is K rounds of a warp argmax over the experts not yet taken; the argmax
// orders candidates by score, then by lower expert index, which is what the CPU's
// ascending scan with a strict `>` picks.
#pragma once

#include <cmath>
#include <cstdint>

#include "moe/cuda/kernel_util.cuh"
#include "moe/cuda/routing.h"

namespace moe::cuda::routing_internal {

inline constexpr int kPerLane = kRouteMaxExperts / kWarpSize;  // expert slots per lane
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

// Lane k < K's choice of token t: its k-th expert and that expert's weight (renormalized
// if asked). Warp-collective: all 32 lanes call it for the same t.
struct Choice {
  int32_t expert;
  float weight;
};
__device__ __forceinline__ Choice RouteToken(const RouteArgs& args, int64_t t, int lane) {
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
  return {my_id, args.renormalize ? my_weight / chosen_sum : my_weight};
}

}  // namespace moe::cuda::routing_internal
