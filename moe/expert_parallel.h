// Expert parallelism: the experts of each MoE layer spread over the ranks of a group, and
// one layer's routed rows sent to the ranks that own their experts and back.
//
// Legend: T tokens, D hidden, E experts, K experts per token, N = T*K routed rows, R ranks.
//
// Rank r of R owns the contiguous experts [Begin(r), End(r)); when R does not divide E the
// first E % R ranks own one more. Every rank takes part in every MoE layer's exchange,
// with zero rows when it has no tokens (ExpertGroup::RunExperts on an empty xs).
//
//   ExpertGroup group(ExpertShard(E, comm.Rank(), comm.Size()), comm);
//   Dispatch(...) -> xs [N, D], grouped by expert (so by owner rank too)
//   RETURN_IF_ERROR(group.RunExperts(local_experts, inputs, xs, plan.expert_offsets, ys));
//     1. all-gather each rank's rows per expert         [R, E] int32
//     2. all-to-all xs rows to their experts' owners    rows from rank p, expert by expert
//     3. the local grouped expert GEMMs                 (RunExperts, the one-rank kernels)
//     4. all-to-all the results back                    ys [N, D] in xs's order
//   Combine(ys, plan, topk_weights) then runs at home, in fixed k order, so a row's result
//   is bit-identical to one rank's.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "moe/weights.h"
#include "runtime/cpu/linear.h"
#include "runtime/dist/communicator.h"
#include "runtime/model.h"
#include "runtime/tensor.h"

namespace moe {

// Which experts each rank owns.
class ExpertShard {
 public:
  ExpertShard(int num_experts, int rank, int num_ranks);
  int num_experts() const { return num_experts_; }
  int rank() const { return rank_; }
  int num_ranks() const { return num_ranks_; }
  int Begin(int rank) const;
  int End(int rank) const { return Begin(rank + 1); }
  // This rank's experts [begin(), end()).
  int begin() const { return Begin(rank_); }
  int end() const { return End(rank_); }
  int count() const { return end() - begin(); }

 private:
  int num_experts_, rank_, num_ranks_;
};

class ExpertGroup {
 public:
  ExpertGroup(ExpertShard shard, dist::Communicator& comm);
  const ExpertShard& shard() const { return shard_; }

  // xs [N, D] f32 grouped by expert as expert_offsets [E+1] says; `local` holds this rank's
  // shard.count() experts -> ys [N, D] f32. `routed`, when set, gets the rows routed to
  // each expert summed over every rank [E]. A collective's error comes back as is.
  absl::Status RunExperts(const ExpertWeights& local, cpu::GemmInputs inputs, const Tensor& xs,
                          const std::vector<int32_t>& expert_offsets, Tensor& ys,
                          std::vector<int32_t>* routed = nullptr);

  // Thread-safe: routed rows sent to other ranks and received from them, since the start.
  ExpertTraffic traffic() const;

 private:
  ExpertShard shard_;
  dist::Communicator& comm_;
  std::atomic<int64_t> rows_sent_{0}, rows_received_{0}, exchange_ns_{0};
};

}  // namespace moe
