#include "moe/dispatch.h"

#include <algorithm>

#include "runtime/check.h"

namespace moe {

DispatchPlan Dispatch(const Tensor& topk_ids, int num_experts) {
  const int64_t T = topk_ids.dim(0), K = topk_ids.dim(1), N = T * K;
  const int32_t* ids = topk_ids.data<int32_t>();
  DispatchPlan plan;
  plan.expert_offsets.assign(num_experts + 1, 0);
  for (int64_t i = 0; i < N; ++i) {
    CHECK(ids[i] >= 0 && ids[i] < num_experts) << "expert id " << ids[i];
    ++plan.expert_offsets[ids[i] + 1];
  }
  for (int e = 0; e < num_experts; ++e) plan.expert_offsets[e + 1] += plan.expert_offsets[e];
  std::vector<int32_t> next(plan.expert_offsets.begin(), plan.expert_offsets.end() - 1);
  plan.source_token.resize(N);
  plan.row_of.resize(N);
  for (int64_t i = 0; i < N; ++i) {
    const int32_t row = next[ids[i]]++;
    plan.row_of[i] = row;
    plan.source_token[row] = static_cast<int32_t>(i / K);
  }
  return plan;
}

void Gather(const Tensor& x, const DispatchPlan& plan, Tensor& xs) {
  const int64_t D = x.dim(1);
  CHECK(xs.dim(0) == static_cast<int64_t>(plan.source_token.size()) && xs.dim(1) == D);
  for (size_t row = 0; row < plan.source_token.size(); ++row) {
    std::copy_n(x.Row<float>(plan.source_token[row]), D, xs.Row<float>(row));
  }
}

void Combine(const Tensor& ys, const DispatchPlan& plan, const Tensor& topk_weights, Tensor& out) {
  const int64_t T = topk_weights.dim(0), K = topk_weights.dim(1), D = ys.dim(1);
  CHECK(out.dim(0) == T && out.dim(1) == D);
  for (int64_t t = 0; t < T; ++t) {
    float* o = out.Row<float>(t);
    std::fill_n(o, D, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float w = topk_weights.Row<float>(t)[k];
      const float* y = ys.Row<float>(plan.row_of[t * K + k]);
      for (int64_t d = 0; d < D; ++d) o[d] += w * y[d];
    }
  }
}

}  // namespace moe
