// CudaMoeModel: the MoE transformer on one GPU, implementing runtime's Model with the same
// math as the CPU MoeModel (moe/moe_model.h): bf16 weights and activations, fp32
// accumulation, an fp32 residual stream, fp32 logits.
//
//   ASSIGN_OR_RETURN(auto model, CudaMoeModel::Load("/models/qwen3-30b-a3b", {}));
//   ASSIGN_OR_RETURN(KvCache kv, model->CreateKvCache(shape));     // bf16 blocks on the GPU
//   ASSIGN_OR_RETURN(Tensor logits, model->Forward(batch, kv));    // [S', V] f32 on the host
//
// A step enqueues every kernel on one stream with no host synchronization until the logits
// are copied back at its end. Decode steps replay as CUDA graphs (see CudaModelOptions):
// the batch is padded with one-token sequences that write their K/V to the cache's scratch
// block, and captured once per (padded batch, context bucket); RoutedTokensPerExpert
// counts real tokens only.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "moe/config.h"
#include "moe/cuda/device_weights.h"
#include "moe/cuda/expert_exchange.h"
#include "moe/routing.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/device_kv_cache.h"
#include "runtime/cuda/device_step_batch.h"
#include "runtime/dist/communicator.h"
#include "runtime/dist/nccl_communicator.h"
#include "runtime/model.h"

namespace moe::cuda {

struct CudaModelOptions {
  int32_t max_tokens = 8192;  // tokens in one step (the engine's max_num_batched_tokens)
  int32_t max_seqs = 256;     // sequences in one step (the engine's max_num_seqs)
  // Decode steps (one token per sequence) of up to this many sequences replay as one CUDA
  // graph each, the batch padded up to a power of two; 0 turns graphs off.
  int32_t max_graph_batch = 256;
  // Prefill steps run the expert GEMMs on Hopper's warpgroup MMA (ExpertsPath::kPrefillWgmma)
  // rather than WMMA. Off until the wgmma path has been checked on a GPU.
  bool wgmma_prefill = false;
  // Expert parallelism over these ranks, one GPU each (Load only): each rank loads its share
  // of every layer's experts, and the MoE layers exchange rows over NCCL. Such steps run
  // eagerly (the exchange reads its counts on the host), not as graphs. Null or one rank:
  // every expert on this GPU.
  dist::Communicator* comm = nullptr;
  // Runs the NCCL exchange with `comm` of one rank too (the GPU check that one rank through
  // NCCL equals the plain model); one rank otherwise keeps its experts and its graphs.
  bool exchange_on_one_rank = false;
};

class CudaMoeModel final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<CudaMoeModel>> Load(const std::string& model_dir,
                                                            const CudaModelOptions& options);
  // A model over weights already on the device (tests, benchmarks with random weights).
  static absl::StatusOr<std::unique_ptr<CudaMoeModel>> Create(MoeConfig config, DeviceWeights weights,
                                                              const CudaModelOptions& options);
  ~CudaMoeModel() override;

  const ModelInfo& info() const override { return info_; }
  const MoeConfig& config() const { return config_; }
  int64_t weight_bytes() const { return weights_.bytes; }

  absl::StatusOr<KvCache> CreateKvCache(const KvCacheShape& shape) override;
  absl::StatusOr<Tensor> Forward(const StepBatch& batch, KvCache& kv) override;
  absl::Status ForwardIdle() override;
  // Under expert parallelism, summed over every rank's tokens.
  std::vector<int64_t> RoutedTokensPerExpert() const override;
  ExpertTraffic expert_traffic() const override { return exchange_ ? exchange_->traffic() : ExpertTraffic{}; }

  // How the steps so far were launched (read it between steps). A decode step of a size
  // seen before is one graph launch between its upload and its logits copy.
  struct StepCounts {
    int64_t eager = 0;           // launched kernel by kernel (prefill; a decode size's first)
    int64_t graph_replays = 0;   // launched as one CUDA graph
    int64_t graph_captures = 0;
    int64_t last_graph_kernels = 0;  // kernel nodes in the graph captured last
  };
  StepCounts step_counts() const { return step_counts_; }

  // Called in every MoE layer of every Forward (tests and debugging). While one is set,
  // steps run without graphs and wait for each MoE layer's router logits to reach the host.
  void set_router_observer(RouterObserver observer) { router_observer_ = std::move(observer); }

 private:
  struct Step;  // per-step buffers and the stream
  CudaMoeModel(MoeConfig config, DeviceWeights weights, CudaModelOptions options);
  absl::Status Init();
  // Enqueues the step from the embedding to the logits in Step::logits (of the first
  // max_seqs logits rows); no host sync.
  absl::Status EnqueueStep(const DeviceStepBatch& batch, const DeviceKvCache& cache);
  // Enqueues the final norm and the head for logits rows [first, first + rows) of the step,
  // rows <= max_seqs, into Step::logits.
  absl::Status EnqueueHead(const DeviceStepBatch& batch, int32_t first, int32_t rows);
  // Tells the routed-token count how many of the step's tokens are real (not padding).
  absl::Status SetRealTokens(int32_t tokens);
  // Copies the first `rows` logits rows back (running the head again for rows past the
  // first max_seqs) and waits for the stream.
  absl::StatusOr<Tensor> FinishStep(const DeviceStepBatch& batch, int32_t rows);
  absl::StatusOr<Tensor> RunStep(const StepBatch& batch, const DeviceKvCache& cache);
  absl::StatusOr<Tensor> DecodeWithGraph(const StepBatch& batch, const DeviceKvCache& cache);
  // One layer's blocks, reading h and writing delta ([T, D] f32).
  absl::Status Attention(int layer, const DeviceStepBatch& batch, const PagedKvLayer& kv);
  absl::Status FeedForward(int layer, int32_t tokens);
  // A dense SwiGLU MLP (E = 1 expert weights) on h -> out [T, D] f32.
  absl::Status Mlp(const DeviceExpertWeights& mlp, int32_t tokens, DeviceTensor& out);
  // Adds what the expert exchange counted (every rank's tokens) to routed_tokens_.
  void CountRoutedAcrossRanks();

  MoeConfig config_;
  DeviceWeights weights_;
  CudaModelOptions options_;
  ModelInfo info_;
  int device_ = 0;  // the GPU it was loaded on: each step runs there, whatever thread calls
  // Expert parallelism; destroyed after step_, whose stream may still use their buffers.
  std::unique_ptr<dist::NcclCommunicator> nccl_;
  std::unique_ptr<ExpertExchange> exchange_;
  std::unique_ptr<Step> step_;
  StepCounts step_counts_;
  std::unique_ptr<std::atomic<int64_t>[]> routed_tokens_;  // [E], summed over layers
  RouterObserver router_observer_;
};

}  // namespace moe::cuda
