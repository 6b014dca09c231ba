// CudaMoeModel: the MoE transformer on one GPU, implementing runtime's Model with the same
// math as the CPU MoeModel (moe/moe_model.h): bf16 weights and activations, fp32
// accumulation, an fp32 residual stream, fp32 logits.
//
//   ASSIGN_OR_RETURN(auto model, CudaMoeModel::Load("/models/qwen3-30b-a3b", {}));
//   ASSIGN_OR_RETURN(KvCache kv, model->CreateKvCache(shape));     // bf16 blocks on the GPU
//   ASSIGN_OR_RETURN(Tensor logits, model->Forward(batch, kv));    // [S', V] f32 on the host
//   ASSIGN_OR_RETURN(StepSamples s, model->ForwardAndSample(batch, kv, sampling));  // what the engine runs
//
// A step enqueues every kernel on one stream with no host synchronization until the logits,
// or only their samples, are copied back at its end. Decode steps replay as CUDA graphs (see CudaModelOptions):
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
#include "moe/cuda/step_runner.h"
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

class CudaMoeModel final : public Model, private StepProgram {
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
  // Samples on the GPU (runtime/cuda/device_sampler.h): only the samples come back. A step
  // whose rows ask for more top logprobs than the device sampler returns samples on the host.
  absl::StatusOr<StepSamples> ForwardAndSample(const StepBatch& batch, KvCache& kv,
                                               const SamplingBatch& sampling) override;
  absl::Status ForwardIdle() override;
  // Under expert parallelism, summed over every rank's tokens.
  std::vector<int64_t> RoutedTokensPerExpert() const override;
  ExpertTraffic expert_traffic() const override { return exchange_ ? exchange_->traffic() : ExpertTraffic{}; }

  // How the steps so far were launched (StepRunner::Counts; read it between steps).
  using StepCounts = StepRunner::Counts;
  StepCounts step_counts() const;

  // Called in every MoE layer of every Forward (tests and debugging). While one is set,
  // steps run without graphs and wait for each MoE layer's router logits to reach the host.
  void set_router_observer(RouterObserver observer) { router_observer_ = std::move(observer); }

 private:
  struct Step;  // per-step buffers and the stream
  CudaMoeModel(MoeConfig config, DeviceWeights weights, CudaModelOptions options);
  absl::Status Init();
  // The checks of a step before it runs; the device cache it uses.
  absl::StatusOr<DeviceKvCache*> PrepareStep(const StepBatch& batch, KvCache& kv);
  // Graphs need a step that stays on the GPU: no router observer, no host-read exchange.
  bool GraphsAllowed() const { return !router_observer_ && exchange_ == nullptr; }
  // A failed step may leave copies queued against the pinned staging areas the next step
  // reuses: waits for them before handing the error on.
  template <typename T>
  absl::StatusOr<T> AfterStep(absl::StatusOr<T> result);
  // StepProgram, for the StepRunner. BeginStep tells the routed-token count how many of the
  // step's tokens are real (not graph padding); EnqueueStep runs the embedding to the head
  // of the first max_seqs logits rows, EnqueueHead later rows, into Step::logits.
  absl::Status BeginStep(int32_t real_tokens) override;
  absl::Status EnqueueStep(const DeviceStepBatch& batch, const DeviceKvCache& cache) override;
  absl::Status EnqueueHead(const DeviceStepBatch& batch, int32_t first, int32_t rows) override;
  const DeviceTensor& logits() const override;
  absl::Status EnqueueReadback() override;  // the step's routed-token counts
  void EndStep() override;
  absl::Status WaitForStream(cudaStream_t stream) override;
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
  std::unique_ptr<std::atomic<int64_t>[]> routed_tokens_;  // [E], summed over layers
  RouterObserver router_observer_;
};

}  // namespace moe::cuda
