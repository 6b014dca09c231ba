#include "moe/routing.h"

#include <cmath>
#include <vector>

#include "runtime/check.h"

namespace moe {

Routing Route(const Tensor& router_logits, const RoutingParams& params) {
  const int64_t T = router_logits.dim(0), E = router_logits.dim(1), K = params.top_k;
  CHECK(K >= 1 && K <= E) << "top_k " << K << " with " << E << " experts";
  Routing r{Tensor::Empty(DType::kI32, {T, K}), Tensor::Empty(DType::kF32, {T, K})};
  std::vector<float> probs(E);
  std::vector<bool> taken(E);
  for (int64_t t = 0; t < T; ++t) {
    const float* logits = router_logits.Row<float>(t);
    if (params.scoring == ScoringFunc::kSigmoid) {
      for (int64_t e = 0; e < E; ++e) probs[e] = 1.0f / (1.0f + std::exp(-logits[e]));
    } else {
      float max_logit = -INFINITY;
      for (int64_t e = 0; e < E; ++e) max_logit = std::max(max_logit, logits[e]);
      float sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += probs[e] = std::exp(logits[e] - max_logit);
      for (int64_t e = 0; e < E; ++e) probs[e] /= sum;
    }

    int32_t* ids = r.topk_ids.Row<int32_t>(t);
    float* weights = r.topk_weights.Row<float>(t);
    std::fill(taken.begin(), taken.end(), false);
    float chosen_sum = 0;
    for (int64_t k = 0; k < K; ++k) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        if (!taken[e] && (best < 0 || probs[e] > probs[best])) best = e;  // strict: lower wins ties
      }
      taken[best] = true;
      ids[k] = static_cast<int32_t>(best);
      weights[k] = probs[best];
      chosen_sum += probs[best];
    }
    if (params.renormalize) {
      for (int64_t k = 0; k < K; ++k) weights[k] /= chosen_sum;
    }
  }
  return r;
}

}  // namespace moe
