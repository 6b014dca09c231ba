#include "moe/experts.h"

#include "runtime/check.h"
#include "runtime/cpu/elementwise.h"
#include "runtime/cpu/linear.h"

namespace moe {

void RunExperts(const ExpertWeights& experts, cpu::GemmInputs inputs, const Tensor& xs,
                const std::vector<int32_t>& expert_offsets, Tensor& ys) {
  const int E = experts.num_experts();
  const int64_t I = experts.intermediate(), D = xs.dim(1), N = xs.dim(0);
  CHECK_EQ(static_cast<int>(expert_offsets.size()), E + 1);
  Tensor gate_up = Tensor::Empty(DType::kF32, {N, 2 * I});  // [N, 2I]
  Tensor h = Tensor::Empty(DType::kF32, {N, I});             // [N, I]
  // Per expert with rows: its weights and its slices of the row buffers.
  std::vector<Tensor> gate_up_w, down_w, x_rows, gate_up_rows, h_rows, y_rows;
  for (int e = 0; e < E; ++e) {
    const int64_t begin = expert_offsets[e], end = expert_offsets[e + 1];
    if (begin == end) continue;
    gate_up_w.push_back(experts.gate_up.Slice(e, e + 1).Reshape({2 * I, D}));
    down_w.push_back(experts.down.Slice(e, e + 1).Reshape({D, I}));
    x_rows.push_back(xs.Slice(begin, end));
    gate_up_rows.push_back(gate_up.Slice(begin, end));
    h_rows.push_back(h.Slice(begin, end));
    y_rows.push_back(ys.Slice(begin, end));
  }
  std::vector<cpu::LinearProduct> up, down;
  for (size_t i = 0; i < gate_up_w.size(); ++i) {
    up.push_back({.x = x_rows[i], .w = gate_up_w[i], .y = gate_up_rows[i]});
    down.push_back({.x = h_rows[i], .w = down_w[i], .y = y_rows[i]});
  }
  // Rows outside [offsets[0], offsets[E]) belong to no expert here and stay untouched.
  const int64_t first = expert_offsets[0], last = expert_offsets[E];
  cpu::Linear(up, inputs);
  Tensor h_used = h.Slice(first, last);
  cpu::SiluMul(gate_up.Slice(first, last), h_used);
  cpu::Linear(down, inputs);
}

}  // namespace moe
