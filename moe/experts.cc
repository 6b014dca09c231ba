#include "moe/experts.h"

#include "runtime/check.h"
#include "runtime/cpu/elementwise.h"
#include "runtime/cpu/linear.h"

namespace moe {

void RunExperts(const ExpertWeights& experts, cpu::GemmInputs inputs, const Tensor& xs,
                const std::vector<int32_t>& expert_offsets, Tensor& ys) {
  const int E = experts.num_experts();
  const int64_t I = experts.intermediate(), D = xs.dim(1);
  CHECK_EQ(static_cast<int>(expert_offsets.size()), E + 1);
  for (int e = 0; e < E; ++e) {
    const int64_t begin = expert_offsets[e], end = expert_offsets[e + 1], n = end - begin;
    if (n == 0) continue;
    const Tensor gate_up_w = experts.gate_up.Slice(e, e + 1).Reshape({2 * I, D});
    const Tensor down_w = experts.down.Slice(e, e + 1).Reshape({D, I});
    Tensor gate_up = Tensor::Empty(DType::kF32, {n, 2 * I});  // [n, 2I]
    Tensor h = Tensor::Empty(DType::kF32, {n, I});             // [n, I]
    cpu::Linear(xs.Slice(begin, end), gate_up_w, gate_up, inputs);
    cpu::SiluMul(gate_up, h);
    Tensor out = ys.Slice(begin, end);
    cpu::Linear(h, down_w, out, inputs);
  }
}

}  // namespace moe
