#include "moe/cuda/cuda_moe_model.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "moe/cuda/dispatch.h"
#include "moe/cuda/expert_load.h"
#include "moe/cuda/experts.h"
#include "moe/cuda/routing.h"
#include "runtime/checkpoint.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/blas.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/device_kv_cache.h"
#include "runtime/cuda/device_step_batch.h"
#include "runtime/cuda/elementwise.h"
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

}  // namespace

// Everything one step needs besides the weights, sized for options.max_tokens tokens and
// options.max_seqs sequences.
struct CudaMoeModel::Step {
  cudaStream_t stream = nullptr;
  std::optional<Blas> blas;
  std::optional<StepBatchUploader> uploader;  // made with the KV cache
  DeviceTensor attention_workspace;           // [bytes] made with the KV cache
  DeviceTensor inv_freq;       // [hd/2] f32 RoPE inverse frequencies
  DeviceTensor x;              // [T, D] f32 residual stream
  DeviceTensor h;              // [T, D] bf16 normalized input of a block
  DeviceTensor qkv;            // [T, (H + 2 KVH) hd] f32 projections
  DeviceTensor q, k, v;        // [T, H, hd], [T, KVH, hd] x2 bf16, after the prologue
  DeviceTensor attn;           // [T, H*hd] bf16 attention output
  DeviceTensor delta;          // [T, D] f32 a block's output, added to x by the next norm
  DeviceTensor router_logits;  // [T, E] f32
  DeviceTensor topk_ids;       // [T, K] i32
  DeviceTensor topk_weights;   // [T, K] f32
  DeviceTensor expert_offsets; // [E+1] i32
  DeviceTensor source_token;   // [T*K] i32
  DeviceTensor row_of;         // [T*K] i32
  DeviceTensor ys;             // [T*K, D] f32 expert outputs
  DeviceTensor dispatch_workspace, experts_workspace;  // raw bytes
  DeviceTensor mlp_gate_up;    // flat, >= [T, 2 I'] bf16 (dense MLP or shared expert)
  DeviceTensor mlp_act;        // flat, >= [T, I'] bf16
  DeviceTensor mlp_out;        // [T, D] f32
  DeviceTensor shared_gate;    // [T, 1] f32
  DeviceTensor last_x, last_delta;  // [S', D] f32 rows that need logits
  DeviceTensor last_h;         // [S', D] bf16
  DeviceTensor logits;         // [S', V] f32
  DeviceTensor routed;         // [E] i64 tokens routed this step, summed over layers

  ~Step() {
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
  ASSIGN_OR_RETURN(ModelWeights host, LoadWeights(config, checkpoint));
  ASSIGN_OR_RETURN(DeviceWeights weights, UploadWeights(config, host));
  return Create(std::move(config), std::move(weights), options);
}

absl::StatusOr<std::unique_ptr<CudaMoeModel>> CudaMoeModel::Create(MoeConfig config, DeviceWeights weights,
                                                                   const CudaModelOptions& options) {
  if (options.max_tokens < 1 || options.max_seqs < 1) {
    return absl::InvalidArgumentError("the CUDA model needs max_tokens and max_seqs >= 1");
  }
  if (config.head_dim % 2 != 0 || config.hidden_size % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("the CUDA model needs an even head_dim and a hidden size ",
                                                   "that is a multiple of 8; got ", config.head_dim, " and ",
                                                   config.hidden_size));
  }
  std::unique_ptr<CudaMoeModel> model(new CudaMoeModel(std::move(config), std::move(weights), options));
  RETURN_IF_ERROR(model->Init());
  return model;
}

absl::Status CudaMoeModel::Init() {
  const MoeConfig& c = config_;
  Step& s = *step_;
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
  ASSIGN_OR_RETURN(Blas blas, Blas::Create(s.stream));
  s.blas.emplace(std::move(blas));
  const int64_t T = options_.max_tokens, S = options_.max_seqs, D = c.hidden_size;
  const int64_t H = c.num_heads, KVH = c.num_kv_heads, hd = c.head_dim;
  const int64_t E = std::max(c.num_experts, 1), K = std::max(c.top_k, 1), N = T * K;
  const int64_t I = std::max<int64_t>(c.expert_intermediate_size, 1), mlp = std::max<int64_t>(MlpWidth(c), 1);
  auto alloc = [](DeviceTensor& t, DType dtype, Shape shape) -> absl::Status {
    ASSIGN_OR_RETURN(t, DeviceTensor::Empty(dtype, std::move(shape)));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(alloc(s.x, DType::kF32, {T, D}));
  RETURN_IF_ERROR(alloc(s.h, DType::kBF16, {T, D}));
  RETURN_IF_ERROR(alloc(s.qkv, DType::kF32, {T, (H + 2 * KVH) * hd}));
  RETURN_IF_ERROR(alloc(s.q, DType::kBF16, {T, H, hd}));
  RETURN_IF_ERROR(alloc(s.k, DType::kBF16, {T, KVH, hd}));
  RETURN_IF_ERROR(alloc(s.v, DType::kBF16, {T, KVH, hd}));
  RETURN_IF_ERROR(alloc(s.attn, DType::kBF16, {T, H * hd}));
  RETURN_IF_ERROR(alloc(s.delta, DType::kF32, {T, D}));
  RETURN_IF_ERROR(alloc(s.router_logits, DType::kF32, {T, E}));
  RETURN_IF_ERROR(alloc(s.topk_ids, DType::kI32, {T, K}));
  RETURN_IF_ERROR(alloc(s.topk_weights, DType::kF32, {T, K}));
  RETURN_IF_ERROR(alloc(s.expert_offsets, DType::kI32, {E + 1}));
  RETURN_IF_ERROR(alloc(s.source_token, DType::kI32, {N}));
  RETURN_IF_ERROR(alloc(s.row_of, DType::kI32, {N}));
  RETURN_IF_ERROR(alloc(s.ys, DType::kF32, {N, D}));
  const int64_t dispatch_bytes = DispatchWorkspaceBytes(T, K, E), experts_bytes = ExpertsWorkspaceBytes(N, E, I);
  RETURN_IF_ERROR(alloc(s.dispatch_workspace, DType::kI32, {dispatch_bytes / 4 + 1}));
  RETURN_IF_ERROR(alloc(s.experts_workspace, DType::kI32, {experts_bytes / 4 + 1}));
  RETURN_IF_ERROR(alloc(s.mlp_gate_up, DType::kBF16, {T * 2 * mlp}));
  RETURN_IF_ERROR(alloc(s.mlp_act, DType::kBF16, {T * mlp}));
  RETURN_IF_ERROR(alloc(s.mlp_out, DType::kF32, {T, D}));
  RETURN_IF_ERROR(alloc(s.shared_gate, DType::kF32, {T, 1}));
  RETURN_IF_ERROR(alloc(s.last_x, DType::kF32, {S, D}));
  RETURN_IF_ERROR(alloc(s.last_delta, DType::kF32, {S, D}));
  RETURN_IF_ERROR(alloc(s.last_h, DType::kBF16, {S, D}));
  RETURN_IF_ERROR(alloc(s.logits, DType::kF32, {S, c.vocab_size}));
  RETURN_IF_ERROR(alloc(s.routed, DType::kI64, {E}));
  const std::vector<float> inv_freq = RopeInverseFrequencies(c.rope_theta, c.head_dim);
  Tensor host_inv = Tensor::Empty(DType::kF32, {hd / 2});
  std::copy(inv_freq.begin(), inv_freq.end(), host_inv.data<float>());
  ASSIGN_OR_RETURN(s.inv_freq, DeviceTensor::FromHost(host_inv, DType::kF32));
  return absl::OkStatus();
}

absl::StatusOr<KvCache> CudaMoeModel::CreateKvCache(const KvCacheShape& shape) {
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
  const int64_t bs = shape.block_size;
  const int64_t max_context = std::min<int64_t>(config_.max_position_embeddings, shape.num_blocks * bs);
  const int32_t blocks_per_seq = static_cast<int32_t>((max_context + bs - 1) / bs);
  Step& s = *step_;
  if (!s.uploader.has_value() || s.uploader->capacity().max_blocks_per_seq < blocks_per_seq) {
    ASSIGN_OR_RETURN(StepBatchUploader up, StepBatchUploader::Create({.max_tokens = options_.max_tokens,
                                                                       .max_seqs = options_.max_seqs,
                                                                       .max_blocks_per_seq = blocks_per_seq}));
    s.uploader.emplace(std::move(up));
    const size_t bytes = PagedAttentionWorkspaceBytes(options_.max_tokens, config_.num_heads, config_.head_dim,
                                                      static_cast<int32_t>(max_context));
    ASSIGN_OR_RETURN(s.attention_workspace, DeviceTensor::Empty(DType::kI32, {static_cast<int64_t>(bytes / 4 + 1)}));
  }
  return kv;
}

absl::StatusOr<Tensor> CudaMoeModel::Forward(const StepBatch& batch, KvCache& kv) {
  DeviceKvCache* cache = DeviceKvCache::FromKvCache(kv);
  Step& s = *step_;
  if (cache == nullptr || !s.uploader.has_value()) {
    return absl::InvalidArgumentError("the CUDA model needs the KV cache it made (CudaMoeModel::CreateKvCache)");
  }
  const KvCacheShape& kv_shape = cache->shape();
  RETURN_IF_ERROR(ValidateStepBatch(batch, {.vocab_size = config_.vocab_size,
                                            .num_blocks = kv_shape.num_blocks,
                                            .block_size = kv_shape.block_size,
                                            .max_context = config_.max_position_embeddings}));
  ASSIGN_OR_RETURN(const DeviceStepBatch d, s.uploader->Upload(batch, s.stream));
  const int32_t T = d.num_tokens, R = d.num_logits_rows, D = config_.hidden_size;
  if (T == 0) return Tensor::Empty(DType::kF32, {0, config_.vocab_size});
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
    RETURN_IF_ERROR(Attention(l, d, cache->Layer(l)));
    AddRmsNorm({.residual = s.x.data<float>(), .delta = s.delta.data<float>(),
                .weight = layer.post_attention_norm.data<float>(), .out = s.h.data<bf16>(), .rows = T,
                .cols = D, .eps = eps}, s.stream);
    RETURN_IF_ERROR(FeedForward(l, T));
  }
  // Only the rows that need logits take the last residual add, the final norm and the head.
  GatherRows({.x = s.x.data<float>(), .rows = d.logits_rows, .out = s.last_x.data<float>(), .num_rows = R,
              .hidden = D}, s.stream);
  GatherRows({.x = s.delta.data<float>(), .rows = d.logits_rows, .out = s.last_delta.data<float>(),
              .num_rows = R, .hidden = D}, s.stream);
  AddRmsNorm({.residual = s.last_x.data<float>(), .delta = s.last_delta.data<float>(),
              .weight = weights_.final_norm.data<float>(), .out = s.last_h.data<bf16>(), .rows = R, .cols = D,
              .eps = eps}, s.stream);
  RETURN_IF_ERROR(s.blas->Linear(s.last_h, weights_.lm_head, s.logits, R));

  Tensor logits = Tensor::Empty(DType::kF32, {R, config_.vocab_size});  // [S', V]
  std::vector<int64_t> routed(config_.num_experts);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.raw(), s.logits.raw(), logits.nbytes(), cudaMemcpyDeviceToHost,
                                       s.stream));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(routed.data(), s.routed.raw(), routed.size() * sizeof(int64_t),
                                       cudaMemcpyDeviceToHost, s.stream));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s.stream));
  for (int e = 0; e < config_.num_experts; ++e) routed_tokens_[e].fetch_add(routed[e], std::memory_order_relaxed);
  return logits;
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
              .k_out = s.k.data<bf16>(), .v_out = s.v.data<bf16>(), .tokens = T, .heads = H, .kv_heads = KVH,
              .head_dim = hd}, s.stream);
  WriteKv({.k = s.k.data<bf16>(), .v = s.v.data<bf16>(), .cache = kv}, d, s.stream);
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
  const MoeConfig& c = config_;
  const int32_t E = c.num_experts, K = c.top_k, D = c.hidden_size;
  RETURN_IF_ERROR(s.blas->Linear(s.h, w.router, s.router_logits, T));
  Route({.router_logits = s.router_logits.data<float>(), .topk_ids = s.topk_ids.data<int32_t>(),
         .topk_weights = s.topk_weights.data<float>(), .num_tokens = T, .num_experts = E, .top_k = K,
         .scoring = ScoringFunc::kSoftmax, .renormalize = c.norm_topk_prob}, s.stream);
  const DeviceDispatchPlan plan{.expert_offsets = s.expert_offsets.data<int32_t>(),
                                .source_token = s.source_token.data<int32_t>(),
                                .row_of = s.row_of.data<int32_t>()};
  Dispatch({.topk_ids = s.topk_ids.data<int32_t>(), .plan = plan, .num_tokens = T, .top_k = K, .num_experts = E},
           s.dispatch_workspace.raw(), s.stream);
  AccumulateRoutedTokens(plan.expert_offsets, s.routed.data<int64_t>(), E, s.stream);
  RunExperts({.x = s.h.data<bf16>(), .expert_offsets = plan.expert_offsets, .source_token = plan.source_token,
              .gate_up = w.experts.gate_up.data<bf16>(), .down = w.experts.down.data<bf16>(),
              .ys = s.ys.data<float>(), .num_tokens = T, .num_rows = T * K, .num_experts = E, .hidden = D,
              .intermediate = w.experts.intermediate()},
             s.experts_workspace.raw(), s.stream);
  Combine({.ys = s.ys.data<float>(), .row_of = plan.row_of, .topk_weights = s.topk_weights.data<float>(),
           .out = s.delta.data<float>(), .num_tokens = T, .top_k = K, .hidden = D}, s.stream);
  if (w.shared.defined()) {
    RETURN_IF_ERROR(Mlp(w.shared, T, s.mlp_out));
    RETURN_IF_ERROR(s.blas->Linear(s.h, w.shared_gate, s.shared_gate, T));
    AddGated({.y = s.mlp_out.data<float>(), .gate = s.shared_gate.data<float>(), .out = s.delta.data<float>(),
              .tokens = T, .hidden = D}, s.stream);
  }
  return absl::OkStatus();
}

std::vector<int64_t> CudaMoeModel::RoutedTokensPerExpert() const {
  std::vector<int64_t> counts(config_.num_experts);
  for (int e = 0; e < config_.num_experts; ++e) counts[e] = routed_tokens_[e].load(std::memory_order_relaxed);
  return counts;
}

}  // namespace moe::cuda
