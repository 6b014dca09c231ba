#include "moe/expert_parallel.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "moe/experts.h"
#include "runtime/check.h"
#include "runtime/status_macros.h"

namespace moe {

ExpertShard::ExpertShard(int num_experts, int rank, int num_ranks)
    : num_experts_(num_experts), rank_(rank), num_ranks_(num_ranks) {
  CHECK(num_ranks >= 1 && rank >= 0 && rank < num_ranks && num_experts >= 0);
}

int ExpertShard::Begin(int rank) const {
  const int base = num_experts_ / num_ranks_, extra = num_experts_ % num_ranks_;
  return rank * base + std::min(rank, extra);
}

ExpertGroup::ExpertGroup(ExpertShard shard, dist::Communicator& comm) : shard_(shard), comm_(comm) {
  CHECK(comm.Size() == shard.num_ranks() && comm.Rank() == shard.rank());
}

absl::Status ExpertGroup::RunExperts(const ExpertWeights& local, cpu::GemmInputs inputs, const Tensor& xs,
                                     const std::vector<int32_t>& expert_offsets, Tensor& ys,
                                     std::vector<int32_t>* routed) {
  const int E = shard_.num_experts(), R = shard_.num_ranks(), me = shard_.rank();
  const int64_t D = xs.dim(1);
  CHECK_EQ(static_cast<int>(expert_offsets.size()), E + 1);
  CHECK_EQ(local.num_experts(), shard_.count());

  // 1. Rows per expert from every rank: [R, E].
  std::vector<int32_t> mine(E);
  for (int e = 0; e < E; ++e) mine[e] = expert_offsets[e + 1] - expert_offsets[e];
  std::vector<int32_t> counts;  // [R, E]
  absl::Time t0 = absl::Now();
  RETURN_IF_ERROR(dist::AllGather<int32_t>(comm_, mine, counts));
  if (routed != nullptr) {
    routed->assign(E, 0);
    for (int p = 0; p < R; ++p) {
      for (int e = 0; e < E; ++e) (*routed)[e] += counts[p * E + e];
    }
  }

  // 2. xs is grouped by expert, so the rows for rank q are one range: send them there.
  std::vector<int64_t> send_rows(R), recv_rows(R, 0);
  for (int q = 0; q < R; ++q) send_rows[q] = expert_offsets[shard_.End(q)] - expert_offsets[shard_.Begin(q)];
  for (int p = 0; p < R; ++p) {
    for (int e = shard_.begin(); e < shard_.end(); ++e) recv_rows[p] += counts[p * E + e];
  }
  int64_t total_recv = 0;
  for (int p = 0; p < R; ++p) total_recv += recv_rows[p];
  std::vector<int64_t> send_floats(R), recv_floats(R);
  for (int q = 0; q < R; ++q) send_floats[q] = send_rows[q] * D, recv_floats[q] = recv_rows[q] * D;
  Tensor remote_x = Tensor::Empty(DType::kF32, {total_recv, D});  // [rows from rank p, by expert]
  RETURN_IF_ERROR(dist::AllToAllV<float>(
      comm_, absl::MakeConstSpan(xs.data<float>(), xs.numel()), send_floats,
      absl::MakeSpan(remote_x.data<float>(), remote_x.numel()), recv_floats));
  absl::Duration exchange = absl::Now() - t0;

  // 3. Regroup expert by expert (source rank order within each), run, and put back.
  const int L = shard_.count();
  std::vector<int32_t> local_offsets(L + 1, 0);
  std::vector<int64_t> source_start(R + 1, 0);  // first row of rank p in remote_x
  for (int p = 0; p < R; ++p) source_start[p + 1] = source_start[p] + recv_rows[p];
  for (int l = 0; l < L; ++l) {
    int32_t n = 0;
    for (int p = 0; p < R; ++p) n += counts[p * E + shard_.begin() + l];
    local_offsets[l + 1] = local_offsets[l] + n;
  }
  std::vector<int64_t> grouped_row_of(total_recv);  // remote_x row -> grouped row
  {
    std::vector<int32_t> next(local_offsets.begin(), local_offsets.end() - 1);
    for (int p = 0; p < R; ++p) {
      int64_t row = source_start[p];
      for (int l = 0; l < L; ++l) {
        for (int32_t i = 0; i < counts[p * E + shard_.begin() + l]; ++i) grouped_row_of[row++] = next[l]++;
      }
    }
  }
  Tensor grouped_x = Tensor::Empty(DType::kF32, {total_recv, D});  // [rows, D] by local expert
  Tensor grouped_y = Tensor::Empty(DType::kF32, {total_recv, D});
  for (int64_t r = 0; r < total_recv; ++r) {
    std::copy_n(remote_x.Row<float>(r), D, grouped_x.Row<float>(grouped_row_of[r]));
  }
  if (L > 0) moe::RunExperts(local, inputs, grouped_x, local_offsets, grouped_y);
  Tensor& remote_y = remote_x;  // [rows from rank p, by expert], reused
  for (int64_t r = 0; r < total_recv; ++r) {
    std::copy_n(grouped_y.Row<float>(grouped_row_of[r]), D, remote_y.Row<float>(r));
  }

  // 4. Results go back the way their rows came.
  t0 = absl::Now();
  RETURN_IF_ERROR(dist::AllToAllV<float>(comm_, absl::MakeConstSpan(remote_y.data<float>(), remote_y.numel()),
                                         recv_floats, absl::MakeSpan(ys.data<float>(), ys.numel()),
                                         send_floats));
  exchange += absl::Now() - t0;
  exchange_ns_.fetch_add(absl::ToInt64Nanoseconds(exchange), std::memory_order_relaxed);
  rows_sent_.fetch_add(xs.dim(0) - send_rows[me], std::memory_order_relaxed);
  rows_received_.fetch_add(total_recv - recv_rows[me], std::memory_order_relaxed);
  return absl::OkStatus();
}

ExpertTraffic ExpertGroup::traffic() const {
  return {.rows_sent = rows_sent_.load(std::memory_order_relaxed),
          .rows_received = rows_received_.load(std::memory_order_relaxed),
          .exchange_seconds = exchange_ns_.load(std::memory_order_relaxed) * 1e-9};
}

}  // namespace moe
