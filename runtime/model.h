// Model: the interface the engine drives. moe/ implements it; the runtime knows nothing
// about experts.
//
//   ASSIGN_OR_RETURN(StepSamples s, model.ForwardAndSample(batch, kv, sampling));  // what the engine runs
//   ASSIGN_OR_RETURN(Tensor logits, model.Forward(batch, kv));   // [S', vocab] f32, for tests
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/kv_cache.h"
#include "runtime/sampling.h"
#include "runtime/step_batch.h"
#include "runtime/tensor.h"

namespace moe {

struct ModelInfo {
  std::string architecture;  // e.g. "Qwen3MoeForCausalLM"
  int vocab_size = 0;
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_context = 0;
  std::vector<int> eos_token_ids;
  DType kv_cache_dtype = DType::kF32;  // what one cached K/V element takes
};

// Expert parallelism: routed rows this rank sent to other ranks' experts and received for
// its own, and the time it spent in those exchanges, since it started.
struct ExpertTraffic {
  int64_t rows_sent = 0;
  int64_t rows_received = 0;
  double exchange_seconds = 0;  // in the collectives of the MoE layers, waiting included
};

// InvalidArgument unless `sampling` has one row for each of batch.logits_rows.
absl::Status CheckSamplingRows(const StepBatch& batch, const SamplingBatch& sampling);

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelInfo& info() const = 0;

  // One forward step: writes this step's K/V into `kv` at batch.slot_mapping, attends over
  // the paged cache and returns the logits of batch.logits_rows, [S', vocab] f32.
  virtual absl::StatusOr<Tensor> Forward(const StepBatch& batch, KvCache& kv) = 0;

  // One forward step that returns the tokens sampled from the logits of batch.logits_rows,
  // with `sampling`'s parameters for each row (runtime/sampling.h), not the logits. This one
  // samples Forward's logits on the CPU; a backend whose logits are on a device samples
  // them there and copies back only the tokens and logprobs.
  virtual absl::StatusOr<StepSamples> ForwardAndSample(const StepBatch& batch, KvCache& kv,
                                                       const SamplingBatch& sampling);

  // Expert parallelism: a step that other ranks run while this one has no tokens. The
  // model joins each layer's expert exchange with zero rows and computes nothing else (no
  // attention, no head). A model on one rank has nothing to do.
  virtual absl::Status ForwardIdle() { return absl::OkStatus(); }

  // The KV cache Forward reads and writes; host f32 tensors unless the backend keeps its
  // own (a GPU backend allocates device memory).
  virtual absl::StatusOr<KvCache> CreateKvCache(const KvCacheShape& shape) { return KvCache::Create(shape); }

  // Tokens routed to each expert so far, summed over layers (for load reports); empty for
  // models without experts. Safe to call from any thread.
  virtual std::vector<int64_t> RoutedTokensPerExpert() const { return {}; }
  virtual ExpertTraffic expert_traffic() const { return {}; }
};

}  // namespace moe
