#include "moe/cuda/cuda_moe_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "moe/cuda/moe_layer.h"
#include "runtime/checkpoint.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/blas.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/device_kv_cache.h"
#include "runtime/cuda/device_step_batch.h"
#include "runtime/cuda/elementwise.h"
#include "runtime/cuda/graph_cache.h"
#include "runtime/cuda/norm.h"
#include "runtime/cuda/qkv.h"
#include "runtime/status_macros.h"

namespace moe::cuda {
namespace {

using bf16 = __nv_bfloat16;

// The widest always-on MLP (dense layers, shared expert), 0 if none.
int64_t MlpWidth(const MoeConfig& c) {
  int64_t width = c.shared_expert_intermediate_size;
  for (int l = 0; l < c.num_layers; ++l) {
    if (!c.IsMoeLayer(l)) width = std::max<int64_t>(width, c.dense_intermediate_size);
  }
  return width;
}

// A [rows, cols] view at the start of a flat buffer that holds at least rows * cols.
DeviceTensor View(const DeviceTensor& flat, int64_t rows, int64_t cols) {
  return flat.Slice(0, rows * cols).Reshape({rows, cols});
}

// What the kernels support, checked at load so a request never meets a launcher's CHECK.
absl::Status CheckSupported(const MoeConfig& c) {
  auto unsupported = [&c](const std::string& what) {
    return absl::UnimplementedError(absl::StrCat("the CUDA backend does not support ", c.architecture_name, " with ",
                                                 what, "; use --backend cpu"));
  };
  const int hd = c.head_dim;
  if (hd != 16 && hd != 32 && hd != 64 && hd != 128 && hd != 256) {
    return unsupported(absl::StrCat("head_dim ", hd, " (16, 32, 64, 128 or 256)"));
  }
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads != 0) {
    return unsupported(absl::StrCat(c.num_heads, " heads over ", c.num_kv_heads, " kv heads"));
  }
  if (c.hidden_size % 8 != 0) return unsupported(absl::StrCat("hidden size ", c.hidden_size, " (a multiple of 8)"));
  if (c.num_experts > 0) {
    if (c.num_experts > 256 || c.top_k > 16) {
      return unsupported(absl::StrCat(c.num_experts, " experts top-", c.top_k, " (at most 256, top-16)"));
    }
    if (c.expert_intermediate_size % 8 != 0) {
      return unsupported(absl::StrCat("expert width ", c.expert_intermediate_size, " (a multiple of 8)"));
    }
  }
  const int64_t qkv_bytes = int64_t{4} * (c.num_heads + 2 * c.num_kv_heads) * hd;
  if (qkv_bytes > 200 * 1024) return unsupported(absl::StrCat(qkv_bytes, " bytes of q, k and v per token"));
  return absl::OkStatus();
}

}  // namespace

// Everything one step needs besides the weights, sized for options.max_tokens tokens and
// options.max_seqs sequences.
struct CudaMoeModel::Step {
  cudaStream_t stream = nullptr;
  std::optional<Blas> blas;
  std::optional<StepRunner> runner;           // upload, graphs, logits; prepared with the KV cache
  DeviceTensor attention_workspace;           // [bytes] made with the KV cache
  DeviceTensor inv_freq;       // [hd/2] f32 RoPE inverse frequencies
  DeviceTensor x;              // [T, D] f32 residual stream
  DeviceTensor h;              // [T, D] bf16 normalized input of a block
  DeviceTensor qkv;            // [T, (H + 2 KVH) hd] f32 projections
  DeviceTensor q;              // [T, H, hd] bf16 after the prologue (k and v go to the cache)
  DeviceTensor attn;           // [T, H*hd] bf16 attention output
  DeviceTensor delta;          // [T, D] f32 a block's output, added to x by the next norm
  std::optional<MoeLayer> moe;  // routed experts' buffers, if the model has MoE layers
  DeviceTensor mlp_gate_up;    // flat, >= [T, 2 I'] bf16 (dense MLP or shared expert)
  DeviceTensor mlp_act;        // flat, >= [T, I'] bf16
  DeviceTensor mlp_out;        // [T, D] f32
  DeviceTensor shared_gate;    // [T, 1] f32
  DeviceTensor last_x, last_delta;  // [S', D] f32 rows that need logits, S' <= max_seqs at a time
  DeviceTensor last_h;         // [S', D] bf16
  DeviceTensor logits;         // [S', V] f32
  DeviceTensor routed;         // [E] i64 tokens routed this step, summed over layers
  std::vector<int64_t> routed_host;  // [E] its copy, read back with the logits
  DeviceTensor real_tokens;    // [1] i32 tokens of the step before any graph padding
  int32_t* real_tokens_host = nullptr;  // pinned source of real_tokens
  int64_t workspace_context = 0;  // longest context the attention workspace is sized for

  ~Step() {
    // Nothing may still run against what is freed below; the stream goes last.
    if (stream != nullptr) cudaStreamSynchronize(stream);
    runner.reset();
    blas.reset();
    if (real_tokens_host != nullptr) cudaFreeHost(real_tokens_host);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

CudaMoeModel::CudaMoeModel(MoeConfig config, DeviceWeights weights, CudaModelOptions options)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      options_(options),
      step_(std::make_unique<Step>()),
      routed_tokens_(new std::atomic<int64_t>[std::max(config_.num_experts, 1)]()) {
  info_ = ModelInfo{.architecture = config_.architecture_name,
                    .vocab_size = config_.vocab_size,
                    .num_layers = config_.num_layers,
                    .num_kv_heads = config_.num_kv_heads,
                    .head_dim = config_.head_dim,
                    .max_context = config_.max_position_embeddings,
                    .eos_token_ids = config_.eos_token_ids,
                    .kv_cache_dtype = DType::kBF16};
}

CudaMoeModel::~CudaMoeModel() = default;

absl::StatusOr<std::unique_ptr<CudaMoeModel>> CudaMoeModel::Load(const std::string& model_dir,
                                                                 const CudaModelOptions& options) {
  if (!HasDevice()) return absl::FailedPreconditionError(NoDeviceReason());
  ASSIGN_OR_RETURN(MoeConfig config, LoadConfig(model_dir));
  ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(model_dir));
  ExpertRange experts;
  if (options.comm != nullptr && (options.comm->Size() > 1 || options.exchange_on_one_rank)) {
    const ExpertShard shard(config.num_experts, options.comm->Rank(), options.comm->Size());
    experts = {shard.begin(), shard.end()};
  }
  ASSIGN_OR_RETURN(ModelWeights host, LoadWeights(config, checkpoint, experts));
  ASSIGN_OR_RETURN(DeviceWeights weights, UploadWeights(config, host));
  return Create(std::move(config), std::move(weights), options);
}

absl::StatusOr<std::unique_ptr<CudaMoeModel>> CudaMoeModel::Create(MoeConfig config, DeviceWeights weights,
                                                                   const CudaModelOptions& options) {
  if (options.max_tokens < 1 || options.max_seqs < 1) {
    return absl::InvalidArgumentError("the CUDA model needs max_tokens and max_seqs >= 1");
  }
  RETURN_IF_ERROR(CheckSupported(config));
  if ((int64_t{options.max_tokens} * std::max(config.top_k, 1) + 63) / 64 + config.num_experts > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", options.max_tokens,
                                                   " is too many for one step of the grouped expert GEMM"));
  }
  std::unique_ptr<CudaMoeModel> model(new CudaMoeModel(std::move(config), std::move(weights), options));
  RETURN_IF_ERROR(model->Init());
  return model;
}

absl::Status CudaMoeModel::Init() {
  const MoeConfig& c = config_;
  Step& s = *step_;
  CUDA_RETURN_IF_ERROR(cudaGetDevice(&device_));
  if (options_.comm != nullptr && (options_.comm->Size() > 1 || options_.exchange_on_one_rank)) {
    const ExpertShard shard(c.num_experts, options_.comm->Rank(), options_.comm->Size());
    for (const DeviceLayerWeights& layer : weights_.layers) {
      if (layer.ffn.is_moe() && layer.ffn.experts.num_experts() != shard.count()) {
        return absl::InvalidArgumentError(absl::StrCat("rank ", shard.rank(), " of ", shard.num_ranks(), " owns ",
                                                       shard.count(), " experts per layer, its weights hold ",
                                                       layer.ffn.experts.num_experts()));
      }
    }
    ASSIGN_OR_RETURN(nccl_, dist::NcclCommunicator::Create(*options_.comm));
    exchange_ = std::make_unique<ExpertExchange>(shard, *nccl_, c.top_k, c.hidden_size, c.expert_intermediate_size);
  }
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  ASSIGN_OR_RETURN(Blas blas, Blas::Create(s.stream));
  s.blas.emplace(std::move(blas));
  s.runner.emplace(StepRunnerOptions{.max_tokens = options_.max_tokens,
                                     .max_seqs = options_.max_seqs,
                                     .max_graph_batch = options_.max_graph_batch,
                                     .vocab_size = c.vocab_size,
                                     .max_position_embeddings = c.max_position_embeddings},
                   s.stream);
  const int64_t T = options_.max_tokens, S = options_.max_seqs, D = c.hidden_size;
  const int64_t H = c.num_heads, KVH = c.num_kv_heads, hd = c.head_dim;
  const int64_t E = std::max(c.num_experts, 1), mlp = std::max<int64_t>(MlpWidth(c), 1);
  auto alloc = [](DeviceTensor& t, DType dtype, Shape shape) -> absl::Status {
    ASSIGN_OR_RETURN(t, DeviceTensor::Empty(dtype, std::move(shape)));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(alloc(s.x, DType::kF32, {T, D}));
  RETURN_IF_ERROR(alloc(s.h, DType::kBF16, {T, D}));
  RETURN_IF_ERROR(alloc(s.qkv, DType::kF32, {T, (H + 2 * KVH) * hd}));
  RETURN_IF_ERROR(alloc(s.q, DType::kBF16, {T, H, hd}));
  RETURN_IF_ERROR(alloc(s.attn, DType::kBF16, {T, H * hd}));
  RETURN_IF_ERROR(alloc(s.delta, DType::kF32, {T, D}));
  if (c.num_experts > 0) {
    ASSIGN_OR_RETURN(MoeLayer moe, MoeLayer::Create({.max_tokens = options_.max_tokens,
                                                     .hidden = c.hidden_size,
                                                     .num_experts = c.num_experts,
                                                     .top_k = c.top_k,
                                                     .intermediate = c.expert_intermediate_size,
                                                     .scoring = ScoringFunc::kSoftmax,
                                                     .renormalize = c.norm_topk_prob,
                                                     .auto_prefill = options_.wgmma_prefill
                                                                         ? ExpertsPath::kPrefillWgmma
                                                                         : ExpertsPath::kPrefillWmma}));
    s.moe.emplace(std::move(moe));
  }
  RETURN_IF_ERROR(alloc(s.mlp_gate_up, DType::kBF16, {T * 2 * mlp}));
  RETURN_IF_ERROR(alloc(s.mlp_act, DType::kBF16, {T * mlp}));
  RETURN_IF_ERROR(alloc(s.mlp_out, DType::kF32, {T, D}));
  RETURN_IF_ERROR(alloc(s.shared_gate, DType::kF32, {T, 1}));
  RETURN_IF_ERROR(alloc(s.last_x, DType::kF32, {S, D}));
  RETURN_IF_ERROR(alloc(s.last_delta, DType::kF32, {S, D}));
  RETURN_IF_ERROR(alloc(s.last_h, DType::kBF16, {S, D}));
  RETURN_IF_ERROR(alloc(s.logits, DType::kF32, {S, c.vocab_size}));
  RETURN_IF_ERROR(alloc(s.routed, DType::kI64, {E}));
  s.routed_host.assign(E, 0);
  RETURN_IF_ERROR(alloc(s.real_tokens, DType::kI32, {1}));
  CUDA_RETURN_IF_ERROR(cudaHostAlloc(reinterpret_cast<void**>(&s.real_tokens_host), sizeof(int32_t),
                                     cudaHostAllocDefault));
  const std::vector<float> inv_freq = RopeInverseFrequencies(c.rope_theta, c.head_dim);
  Tensor host_inv = Tensor::Empty(DType::kF32, {hd / 2});
  std::copy(inv_freq.begin(), inv_freq.end(), host_inv.data<float>());
  ASSIGN_OR_RETURN(s.inv_freq, DeviceTensor::FromHost(host_inv, DType::kF32));
  // Weights were written by copies and fills on the legacy stream: let them land before
  // the model's non-blocking stream reads them.
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return absl::OkStatus();
}

absl::StatusOr<KvCache> CudaMoeModel::CreateKvCache(const KvCacheShape& shape) {
  RETURN_IF_ERROR(UseDevice(device_));
  if (shape.num_layers != config_.num_layers || shape.num_kv_heads != config_.num_kv_heads ||
      shape.head_dim != config_.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache of ", shape.num_layers, " layers x ", shape.num_kv_heads,
                                                   " heads x ", shape.head_dim, " does not fit the model's ",
                                                   config_.num_layers, " x ", config_.num_kv_heads, " x ",
                                                   config_.head_dim));
  }
  ASSIGN_OR_RETURN(KvCache kv, DeviceKvCache::Create(shape));
  // Step arrays and the attention workspace are sized for the longest context this cache
  // can hold, and only grow if a later cache holds longer ones.
  Step& s = *step_;
  RETURN_IF_ERROR(s.runner->PrepareFor(shape));
  const int64_t max_context =
      std::min<int64_t>(config_.max_position_embeddings, int64_t{shape.num_blocks} * shape.block_size);
  if (s.workspace_context < max_context) {
    // Only decode steps (one token per sequence) use it: at most max_seqs tokens.
    const int32_t decode_tokens = std::min(options_.max_tokens, options_.max_seqs);
    const size_t bytes = PagedAttentionWorkspaceBytes(decode_tokens, config_.num_heads, config_.head_dim,
                                                      static_cast<int32_t>(max_context));
    ASSIGN_OR_RETURN(s.attention_workspace, DeviceTensor::Empty(DType::kI32, {static_cast<int64_t>(bytes / 4 + 1)}));
    s.workspace_context = max_context;
  }
  return kv;
}

template <typename T>
absl::StatusOr<T> CudaMoeModel::AfterStep(absl::StatusOr<T> result) {
  if (!result.ok()) cudaStreamSynchronize(step_->stream);
  return result;
}

absl::StatusOr<DeviceKvCache*> CudaMoeModel::PrepareStep(const StepBatch& batch, KvCache& kv) {
  RETURN_IF_ERROR(UseDevice(device_));  // the engine's thread is not the one that loaded
  DeviceKvCache* cache = DeviceKvCache::FromKvCache(kv);
  Step& s = *step_;
  if (cache == nullptr || !s.runner->prepared()) {
    return absl::InvalidArgumentError("the CUDA model needs the KV cache it made (CudaMoeModel::CreateKvCache)");
  }
  const KvCacheShape& kv_shape = cache->shape();
  const int64_t cache_context = std::min<int64_t>(config_.max_position_embeddings,
                                                  int64_t{kv_shape.num_blocks} * kv_shape.block_size);
  if (kv_shape.num_layers != config_.num_layers || kv_shape.num_kv_heads != config_.num_kv_heads ||
      kv_shape.head_dim != config_.head_dim || cache_context > s.workspace_context) {
    return absl::InvalidArgumentError("the KV cache was not made by this model's CreateKvCache");
  }
  RETURN_IF_ERROR(ValidateStepBatch(batch, {.vocab_size = config_.vocab_size,
                                            .num_blocks = kv_shape.num_blocks,
                                            .block_size = kv_shape.block_size,
                                            .max_context = config_.max_position_embeddings}));
  return cache;
}

absl::StatusOr<Tensor> CudaMoeModel::Forward(const StepBatch& batch, KvCache& kv) {
  ASSIGN_OR_RETURN(DeviceKvCache* cache, PrepareStep(batch, kv));
  if (batch.num_tokens() == 0) return Tensor::Empty(DType::kF32, {0, config_.vocab_size});
  return AfterStep(step_->runner->Run(batch, *cache, *this, GraphsAllowed()));
}

absl::StatusOr<StepSamples> CudaMoeModel::ForwardAndSample(const StepBatch& batch, KvCache& kv,
                                                           const SamplingBatch& sampling) {
  RETURN_IF_ERROR(CheckSamplingRows(batch, sampling));
  ASSIGN_OR_RETURN(DeviceKvCache* cache, PrepareStep(batch, kv));
  // A row asking for more top logprobs than the device sampler returns: the host samples.
  if (!step_->runner->CanSample(sampling)) return Model::ForwardAndSample(batch, kv, sampling);
  if (batch.num_tokens() == 0) {
    StepSamples none;
    none.Resize(0, 0);
    return none;
  }
  return AfterStep(step_->runner->RunAndSample(batch, *cache, *this, GraphsAllowed(), sampling));
}

absl::Status CudaMoeModel::EnqueueStep(const DeviceStepBatch& d, const DeviceKvCache& cache) {
  Step& s = *step_;
  const int32_t T = d.num_tokens, D = config_.hidden_size;
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(s.routed.raw(), 0, s.routed.nbytes(), s.stream));
  Embed({.table = weights_.embed_tokens.data<bf16>(), .token_ids = d.token_ids, .out = s.x.data<float>(),
         .tokens = T, .hidden = D}, s.stream);
  const float eps = config_.rms_norm_eps;
  for (int l = 0; l < config_.num_layers; ++l) {
    const DeviceLayerWeights& layer = weights_.layers[l];
    // x += the previous layer's feed-forward output (none before layer 0); h = norm(x).
    AddRmsNorm({.residual = s.x.data<float>(), .delta = l > 0 ? s.delta.data<float>() : nullptr,
                .weight = layer.input_norm.data<float>(), .out = s.h.data<bf16>(), .rows = T, .cols = D,
                .eps = eps}, s.stream);
    RETURN_IF_ERROR(Attention(l, d, cache.Layer(l)));
    AddRmsNorm({.residual = s.x.data<float>(), .delta = s.delta.data<float>(),
                .weight = layer.post_attention_norm.data<float>(), .out = s.h.data<bf16>(), .rows = T,
                .cols = D, .eps = eps}, s.stream);
    RETURN_IF_ERROR(FeedForward(l, T));
  }
  return EnqueueHead(d, 0, std::min(d.num_logits_rows, options_.max_seqs));
}

absl::Status CudaMoeModel::EnqueueHead(const DeviceStepBatch& d, int32_t first, int32_t rows) {
  Step& s = *step_;
  const int32_t D = config_.hidden_size;
  // Only the rows that need logits take the last residual add, the final norm and the head.
  GatherRows({.x = s.x.data<float>(), .rows = d.logits_rows + first, .out = s.last_x.data<float>(),
              .num_rows = rows, .hidden = D}, s.stream);
  GatherRows({.x = s.delta.data<float>(), .rows = d.logits_rows + first, .out = s.last_delta.data<float>(),
              .num_rows = rows, .hidden = D}, s.stream);
  AddRmsNorm({.residual = s.last_x.data<float>(), .delta = s.last_delta.data<float>(),
              .weight = weights_.final_norm.data<float>(), .out = s.last_h.data<bf16>(), .rows = rows, .cols = D,
              .eps = config_.rms_norm_eps}, s.stream);
  return s.blas->Linear(s.last_h, weights_.lm_head, s.logits, rows);
}

absl::Status CudaMoeModel::BeginStep(int32_t tokens) {
  Step& s = *step_;
  *s.real_tokens_host = tokens;  // the previous step finished (the runner waited), so no copy reads it
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.real_tokens.raw(), s.real_tokens_host, sizeof(int32_t),
                                       cudaMemcpyHostToDevice, s.stream));
  return absl::OkStatus();
}

const DeviceTensor& CudaMoeModel::logits() const { return step_->logits; }

absl::Status CudaMoeModel::EnqueueReadback() {
  Step& s = *step_;
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(s.routed_host.data(), s.routed.raw(), s.routed_host.size() * sizeof(int64_t),
                                       cudaMemcpyDeviceToHost, s.stream));
  return absl::OkStatus();
}

absl::Status CudaMoeModel::WaitForStream(cudaStream_t stream) {
  if (nccl_ != nullptr) return nccl_->Synchronize(stream);  // NCCL work: a bounded wait
  return StepProgram::WaitForStream(stream);
}

void CudaMoeModel::EndStep() {
  const Step& s = *step_;
  for (int e = 0; e < config_.num_experts; ++e) routed_tokens_[e].fetch_add(s.routed_host[e], std::memory_order_relaxed);
  CountRoutedAcrossRanks();
}

void CudaMoeModel::CountRoutedAcrossRanks() {
  if (exchange_ == nullptr) return;
  const std::vector<int64_t> routed = exchange_->TakeRouted();
  for (size_t e = 0; e < routed.size(); ++e) routed_tokens_[e].fetch_add(routed[e], std::memory_order_relaxed);
}

absl::Status CudaMoeModel::ForwardIdle() {
  if (exchange_ == nullptr) return absl::OkStatus();
  RETURN_IF_ERROR(UseDevice(device_));
  Step& s = *step_;
  for (int l = 0; l < config_.num_layers; ++l) {
    const DeviceFeedForwardWeights& w = weights_.layers[l].ffn;
    if (!w.is_moe()) continue;
    RETURN_IF_ERROR(s.moe->Run(*s.blas, s.stream, s.h, 0, w.router, w.experts, s.delta, nullptr, exchange_.get()));
  }
  RETURN_IF_ERROR(WaitForStream(s.stream));
  CountRoutedAcrossRanks();
  return absl::OkStatus();
}

absl::Status CudaMoeModel::Attention(int l, const DeviceStepBatch& d, const PagedKvLayer& kv) {
  const DeviceAttentionWeights& w = weights_.layers[l].attention;
  const MoeConfig& c = config_;
  Step& s = *step_;
  const int32_t T = d.num_tokens, H = c.num_heads, KVH = c.num_kv_heads, hd = c.head_dim;
  RETURN_IF_ERROR(s.blas->Linear(s.h, w.qkv_proj, s.qkv, T));
  const float* qkv = s.qkv.data<float>();
  const QkNormKind norm = c.qk_norm == QkNorm::kPerHead          ? QkNormKind::kPerHead
                          : c.qk_norm == QkNorm::kWholeProjection ? QkNormKind::kWholeProjection
                                                                  : QkNormKind::kNone;
  auto ptr = [](const DeviceTensor& t) { return t.defined() ? t.data<float>() : nullptr; };
  PrepareQkv({.q = qkv, .k = qkv + H * hd, .v = qkv + (H + KVH) * hd, .row_stride = (H + 2 * KVH) * hd,
              .q_bias = ptr(w.q_bias), .k_bias = ptr(w.k_bias), .v_bias = ptr(w.v_bias), .qk_norm = norm,
              .q_norm = ptr(w.q_norm), .k_norm = ptr(w.k_norm), .eps = c.rms_norm_eps, .clip = c.clip_qkv,
              .positions = d.positions, .inv_freq = s.inv_freq.data<float>(), .q_out = s.q.data<bf16>(),
              .k_out = kv.key, .v_out = kv.value, .kv_slots = d.slot_mapping,
              .num_kv_slots = int64_t{kv.num_blocks} * kv.block_size, .tokens = T, .heads = H, .kv_heads = KVH,
              .head_dim = hd}, s.stream);  // k and v go straight to their cache slots
  PagedAttention({.q = s.q.data<bf16>(), .cache = kv, .out = s.attn.data<bf16>(), .num_heads = H,
                  .scale = 1.0f / std::sqrt(static_cast<float>(hd)), .sliding_window = c.sliding_window},
                 d, s.attention_workspace.raw(), s.attention_workspace.nbytes(), s.stream);
  return s.blas->Linear(s.attn, w.o_proj, s.delta, T);
}

absl::Status CudaMoeModel::Mlp(const DeviceExpertWeights& mlp, int32_t T, DeviceTensor& out) {
  Step& s = *step_;
  const int64_t I = mlp.intermediate(), D = config_.hidden_size, rows = s.x.dim(0);
  DeviceTensor gate_up = View(s.mlp_gate_up, rows, 2 * I), act = View(s.mlp_act, rows, I);
  RETURN_IF_ERROR(s.blas->Linear(s.h, mlp.gate_up.Reshape({2 * I, D}), gate_up, T));
  SiluMul({.gate_up = gate_up.data<bf16>(), .out = act.data<bf16>(), .tokens = T,
           .intermediate = static_cast<int32_t>(I)}, s.stream);
  return s.blas->Linear(act, mlp.down.Reshape({D, I}), out, T);
}

absl::Status CudaMoeModel::FeedForward(int l, int32_t T) {
  const DeviceFeedForwardWeights& w = weights_.layers[l].ffn;
  Step& s = *step_;
  if (!w.is_moe()) return Mlp(w.experts, T, s.delta);
  const int32_t D = config_.hidden_size;
  if (!s.moe.has_value()) return absl::InternalError("an MoE layer in a model made without experts");
  // Across ranks the exchange counts every rank's tokens; here, the device counts this step's.
  const RoutedTokenCount routed{.counts = s.routed.data<int64_t>(), .num_tokens = s.real_tokens.data<int32_t>()};
  RETURN_IF_ERROR(s.moe->Run(*s.blas, s.stream, s.h, T, w.router, w.experts, s.delta,
                             exchange_ ? nullptr : &routed, exchange_.get()));
  if (router_observer_) {
    Tensor logits = Tensor::Empty(DType::kF32, {T, config_.num_experts});  // [T, E]
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.raw(), s.moe->router_logits().raw(), logits.nbytes(),
                                         cudaMemcpyDeviceToHost, s.stream));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
    router_observer_(l, logits);
  }
  if (w.shared.defined()) {
    RETURN_IF_ERROR(Mlp(w.shared, T, s.mlp_out));
    RETURN_IF_ERROR(s.blas->Linear(s.h, w.shared_gate, s.shared_gate, T));
    AddGated({.y = s.mlp_out.data<float>(), .gate = s.shared_gate.data<float>(), .out = s.delta.data<float>(),
              .tokens = T, .hidden = D}, s.stream);
  }
  return absl::OkStatus();
}

CudaMoeModel::StepCounts CudaMoeModel::step_counts() const { return step_->runner->counts(); }

std::vector<int64_t> CudaMoeModel::RoutedTokensPerExpert() const {
  std::vector<int64_t> counts(config_.num_experts);
  for (int e = 0; e < config_.num_experts; ++e) counts[e] = routed_tokens_[e].load(std::memory_order_relaxed);
  return counts;
}

}  // namespace moe::cuda
