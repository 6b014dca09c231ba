// MoeLayer: the routed-experts half of an MoE block on the GPU, with its buffers.
//
// Legend: T tokens, D hidden, E experts, K experts per token, I expert width, N = T*K.
//
//   router_logits = h @ W_router^T             [T, E] f32   (cuBLAS)
//   topk_ids, topk_weights = Route(.)          [T, K]
//   plan = Dispatch(topk_ids)                  offsets [E+1], source_token [N], row_of [N]
//                                              (one RouteAndDispatch launch when N <= 1024)
//   ys = RunExperts(h, plan)                   [N, D] f32   (or across ranks: ExpertExchange)
//   out = Combine(ys, plan, topk_weights)      [T, D] f32
//
// Everything runs on the stream of the Blas handed in, with no host synchronization on one
// GPU; an ExpertExchange reads the routed counts once per layer.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "moe/cuda/device_weights.h"
#include "moe/cuda/expert_exchange.h"
#include "moe/cuda/expert_load.h"
#include "moe/cuda/experts.h"
#include "moe/cuda/routing.h"
#include "runtime/cuda/blas.h"
#include "runtime/cuda/device_tensor.h"

namespace moe::cuda {

struct MoeLayerShape {
  int32_t max_tokens = 0;    // T at most
  int32_t hidden = 0;        // D
  int32_t num_experts = 0;   // E
  int32_t top_k = 0;         // K
  int32_t intermediate = 0;  // I
  ScoringFunc scoring = ScoringFunc::kSoftmax;
  bool renormalize = false;
  ExpertsPath experts_path = ExpertsPath::kAuto;  // benchmarks and tests may force one
  ExpertsPath auto_prefill = ExpertsPath::kPrefillWmma;  // the prefill path kAuto picks
};

class MoeLayer {
 public:
  static absl::StatusOr<MoeLayer> Create(const MoeLayerShape& shape);

  // h [>=T, D] bf16 -> out [>=T, D] f32 (written). `routed`, if given, counts the tokens
  // routed to each expert. With `exchange` the experts are spread over ranks: `experts` are
  // this rank's, and T may be 0 (the rank still takes part in the exchange).
  absl::Status Run(const Blas& blas, cudaStream_t stream, const DeviceTensor& h, int32_t tokens,
                   const DeviceTensor& router, const DeviceExpertWeights& experts, DeviceTensor& out,
                   const RoutedTokenCount* routed = nullptr, ExpertExchange* exchange = nullptr);

  const MoeLayerShape& shape() const { return shape_; }
  const DeviceTensor& topk_ids() const { return topk_ids_; }            // [T, K] i32 of the last Run
  const DeviceTensor& router_logits() const { return router_logits_; }  // [T, E] f32 of the last Run

 private:
  MoeLayerShape shape_;
  DeviceTensor router_logits_;   // [T, E] f32
  DeviceTensor topk_ids_;        // [T, K] i32
  DeviceTensor topk_weights_;    // [T, K] f32
  DeviceTensor expert_offsets_;  // [E+1] i32
  DeviceTensor source_token_;    // [N] i32
  DeviceTensor row_of_;          // [N] i32
  DeviceTensor ys_;              // [N, D] f32
  DeviceTensor dispatch_workspace_, experts_workspace_;  // raw bytes
};

}  // namespace moe::cuda
