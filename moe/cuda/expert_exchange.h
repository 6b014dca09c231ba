// ExpertExchange: one MoE layer's routed rows sent to the GPUs that own their experts and
// back (expert parallelism on the CUDA backend), around this rank's grouped expert GEMMs.
//
// Legend: T tokens, D hidden, E experts, N = T*K routed rows here, M rows received, R ranks,
// L this rank's experts.
//
//   counts   = AllGather(expert_offsets)               [R, E+1] i32, read by the host
//   xs       = h[source_token]                         [N, D] bf16, grouped by expert = by owner
//   remote_x = AllToAllV(xs)                           [M, D] bf16, rank by rank, expert by expert
//   ys_local = RunExperts(remote_x, local plan)        [M, D] f32 expert-major (the one-GPU kernels)
//   ys       = AllToAllV(ys_local in remote_x order)   [N, D] f32, in xs's order
//   Combine(ys, plan, topk_weights) then runs at home, as on one GPU.
//
// The host reads the counts once per MoE layer (to size the NCCL sends), so a step with
// experts on several ranks runs eagerly, not as a CUDA graph. A rank without tokens joins
// with N = 0. Buffers grow to what the largest exchange so far needed.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "moe/cuda/device_weights.h"
#include "moe/cuda/dispatch.h"
#include "moe/cuda/experts.h"
#include "moe/expert_parallel.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/dist/nccl_communicator.h"

namespace moe::cuda {

struct ExchangeArgs {
  const DeviceTensor* h;              // [>=T, D] bf16 the layer's input
  const DeviceTensor* expert_offsets; // [E+1] i32 over all E experts, for this rank's tokens
  const DeviceTensor* source_token;   // [>=N] i32 token of each dispatched row
  int32_t tokens = 0;                 // T (0: an idle rank's part)
  const DeviceExpertWeights* local;  // this rank's L experts
  ExpertsPath path = ExpertsPath::kAuto;
  ExpertsPath auto_prefill = ExpertsPath::kPrefillWmma;
  DeviceTensor* ys;              // [>=N, D] f32, written in plan row order
};

class ExpertExchange {
 public:
  ExpertExchange(ExpertShard shard, dist::NcclCommunicator& nccl, int32_t top_k, int32_t hidden,
                 int32_t intermediate);
  ~ExpertExchange();
  ExpertExchange(const ExpertExchange&) = delete;
  ExpertExchange& operator=(const ExpertExchange&) = delete;

  const ExpertShard& shard() const { return shard_; }
  absl::Status Run(const ExchangeArgs& args, cudaStream_t stream);
  // Routed tokens per expert [E], summed over every rank's tokens and the layers run since
  // the last call.
  std::vector<int64_t> TakeRouted();
  ExpertTraffic traffic() const { return traffic_; }

 private:
  // At least `rows` rows in `t` (reallocated, larger, when not).
  absl::Status Reserve(DeviceTensor& t, DType dtype, int64_t rows, int64_t cols);

  ExpertShard shard_;
  dist::NcclCommunicator& nccl_;
  const int32_t top_k_, hidden_, intermediate_;
  DeviceTensor all_offsets_;  // [R, E+1] i32
  int32_t* offsets_host_ = nullptr;  // pinned [R, E+1]
  DeviceTensor xs_, remote_x_;       // [N, D], [M, D] bf16
  DeviceTensor ys_local_, ys_back_;  // [M, D] f32
  DeviceTensor local_plan_;          // [L+1 + 2M] i32: local offsets, source rows, back rows
  int32_t* local_plan_host_ = nullptr;  // pinned, as large as local_plan_
  int64_t local_plan_capacity_ = 0;
  DeviceTensor workspace_;           // RunExperts scratch
  std::vector<int64_t> routed_;      // [E]
  ExpertTraffic traffic_;
};

}  // namespace moe::cuda
