#include "moe/cuda/expert_exchange.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/check.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/elementwise.h"
#include "runtime/status_macros.h"

namespace moe::cuda {

ExpertExchange::ExpertExchange(ExpertShard shard, dist::NcclCommunicator& nccl, int32_t top_k, int32_t hidden,
                               int32_t intermediate)
    : shard_(shard), nccl_(nccl), top_k_(top_k), hidden_(hidden), intermediate_(intermediate),
      routed_(shard.num_experts(), 0) {
  CHECK(nccl.Rank() == shard.rank() && nccl.Size() == shard.num_ranks());
}

ExpertExchange::~ExpertExchange() {
  if (offsets_host_ != nullptr) cudaFreeHost(offsets_host_);
  if (local_plan_host_ != nullptr) cudaFreeHost(local_plan_host_);
}

std::vector<int64_t> ExpertExchange::TakeRouted() {
  std::vector<int64_t> taken(routed_.size(), 0);
  taken.swap(routed_);
  return taken;
}

absl::Status ExpertExchange::Reserve(DeviceTensor& t, DType dtype, int64_t rows, int64_t cols) {
  rows = std::max<int64_t>(rows, 1);
  if (t.defined() && t.dim(0) >= rows) return absl::OkStatus();
  // The old buffer may still be read by queued work: let it finish before it is freed.
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  ASSIGN_OR_RETURN(t, DeviceTensor::Empty(dtype, {std::max<int64_t>(rows, t.defined() ? 2 * t.dim(0) : 0), cols}));
  return absl::OkStatus();
}

absl::Status ExpertExchange::Run(const ExchangeArgs& a, cudaStream_t stream) {
  const int E = shard_.num_experts(), R = shard_.num_ranks(), me = shard_.rank(), L = shard_.count();
  const int64_t D = hidden_, N = int64_t{a.tokens} * top_k_;
  const int64_t stride = E + 1;  // one rank's offsets
  if (a.local->num_experts() != L || a.expert_offsets->numel() != stride) {
    return absl::InvalidArgumentError(absl::StrCat("expert exchange: rank ", me, " owns ", L, " of ", E,
                                                   " experts, got weights of ", a.local->num_experts()));
  }

  // 1. Every rank's expert offsets, on the host; meanwhile xs = h[source_token].
  if (!all_offsets_.defined()) {
    ASSIGN_OR_RETURN(all_offsets_, DeviceTensor::Empty(DType::kI32, {R, stride}));
    CUDA_RETURN_IF_ERROR(cudaHostAlloc(reinterpret_cast<void**>(&offsets_host_), all_offsets_.nbytes(),
                                       cudaHostAllocDefault));
  }
  RETURN_IF_ERROR(nccl_.AllGather(*a.expert_offsets, all_offsets_, stream));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(offsets_host_, all_offsets_.raw(), all_offsets_.nbytes(),
                                       cudaMemcpyDeviceToHost, stream));
  RETURN_IF_ERROR(Reserve(xs_, DType::kBF16, N, D));
  GatherRows(GatherRowsOf<__nv_bfloat16>{.x = a.h->data<__nv_bfloat16>(), .rows = a.source_token->data<int32_t>(),
                                         .out = xs_.data<__nv_bfloat16>(), .num_rows = static_cast<int32_t>(N),
                                         .hidden = hidden_},
             stream);
  RETURN_IF_ERROR(nccl_.Synchronize(stream));  // bounded: a dead peer ends the group
  auto count = [&](int p, int e) { return offsets_host_[p * stride + e + 1] - offsets_host_[p * stride + e]; };

  // 2. Who sends what where; this rank's rows expert by expert (sources in rank order).
  std::vector<int64_t> send_rows(R), recv_rows(R, 0);
  const int32_t* mine = offsets_host_ + me * stride;
  for (int q = 0; q < R; ++q) send_rows[q] = mine[shard_.End(q)] - mine[shard_.Begin(q)];
  int64_t M = 0;
  for (int p = 0; p < R; ++p) {
    const int32_t* theirs = offsets_host_ + p * stride;
    recv_rows[p] = theirs[shard_.end()] - theirs[shard_.begin()];
    M += recv_rows[p];
    for (int e = 0; e < E; ++e) routed_[e] += count(p, e);
  }
  const int64_t plan_size = L + 1 + 2 * M;  // local offsets [L+1], source rows [M], back rows [M]
  if (plan_size > local_plan_capacity_) {
    RETURN_IF_ERROR(Reserve(local_plan_, DType::kI32, 2 * plan_size, 1));
    if (local_plan_host_ != nullptr) cudaFreeHost(local_plan_host_);
    local_plan_capacity_ = local_plan_.dim(0);
    CUDA_RETURN_IF_ERROR(cudaHostAlloc(reinterpret_cast<void**>(&local_plan_host_),
                                       local_plan_capacity_ * sizeof(int32_t), cudaHostAllocDefault));
  }
  int32_t* local_offsets = local_plan_host_;
  int32_t* source_rows = local_offsets + L + 1;  // grouped row -> row of remote_x
  int32_t* back_rows = source_rows + M;          // row of remote_x -> grouped row
  local_offsets[0] = 0;
  for (int l = 0; l < L; ++l) {
    int32_t n = 0;
    for (int p = 0; p < R; ++p) n += count(p, shard_.begin() + l);
    local_offsets[l + 1] = local_offsets[l] + n;
  }
  std::vector<int32_t> next(local_offsets, local_offsets + L);
  for (int p = 0, row = 0; p < R; ++p) {
    for (int l = 0; l < L; ++l) {
      for (int32_t i = 0; i < count(p, shard_.begin() + l); ++i, ++row) {
        source_rows[next[l]] = row;
        back_rows[row] = next[l]++;
      }
    }
  }
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(local_plan_.raw(), local_plan_host_, plan_size * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, stream));
  const int32_t* d_offsets = local_plan_.data<int32_t>();
  const int32_t* d_source = d_offsets + L + 1;
  const int32_t* d_back = d_source + M;

  // 3. Rows to the experts' ranks.
  RETURN_IF_ERROR(Reserve(remote_x_, DType::kBF16, M, D));
  DeviceTensor send_x = xs_.Slice(0, N), recv_x = remote_x_.Slice(0, M);
  RETURN_IF_ERROR(nccl_.AllToAllV(send_x, send_rows, recv_x, recv_rows, stream));

  // 4. This rank's experts, with the one-GPU kernels, then back in arrival order.
  RETURN_IF_ERROR(Reserve(ys_local_, DType::kF32, M, D));
  RETURN_IF_ERROR(Reserve(ys_back_, DType::kF32, M, D));
  if (L > 0 && M > 0) {
    const int64_t scratch = ExpertsWorkspaceBytes(static_cast<int32_t>(M), L, intermediate_);
    RETURN_IF_ERROR(Reserve(workspace_, DType::kI32, scratch / 4 + 1, 1));
    RunExperts({.x = remote_x_.data<__nv_bfloat16>(), .expert_offsets = d_offsets, .source_token = d_source,
                .gate_up = a.local->gate_up.data<__nv_bfloat16>(), .down = a.local->down.data<__nv_bfloat16>(),
                .ys = ys_local_.data<float>(), .num_tokens = static_cast<int32_t>(M),
                .num_rows = static_cast<int32_t>(M), .num_experts = L, .hidden = hidden_,
                .intermediate = intermediate_, .path = a.path, .auto_prefill = a.auto_prefill},
               workspace_.raw(), stream);
    GatherRows(GatherRowsOf<float>{.x = ys_local_.data<float>(), .rows = d_back, .out = ys_back_.data<float>(),
                                   .num_rows = static_cast<int32_t>(M), .hidden = hidden_},
               stream);
  }

  // 5. Results back the way their rows came, into the plan's order.
  DeviceTensor send_y = ys_back_.Slice(0, M), recv_y = a.ys->Slice(0, N);
  RETURN_IF_ERROR(nccl_.AllToAllV(send_y, recv_rows, recv_y, send_rows, stream));
  traffic_.rows_sent += N - send_rows[me];
  traffic_.rows_received += M - recv_rows[me];
  return absl::OkStatus();
}

}  // namespace moe::cuda
