#include "moe/moe_model.h"

#include "absl/strings/str_cat.h"
#include "moe/attention_block.h"
#include "moe/feed_forward.h"
#include "runtime/checkpoint.h"
#include "runtime/cpu/elementwise.h"
#include "runtime/cpu/linear.h"
#include "runtime/cpu/norm.h"
#include "runtime/status_macros.h"

namespace moe {

absl::StatusOr<std::unique_ptr<MoeModel>> MoeModel::Load(const std::string& model_dir,
                                                         const MoeModelOptions& options) {
  dist::Communicator* comm = options.comm;
  ASSIGN_OR_RETURN(MoeConfig config, LoadConfig(model_dir));
  ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(model_dir));
  std::unique_ptr<ExpertGroup> group;
  ExpertRange experts;
  if (comm != nullptr && comm->Size() > 1) {
    group = std::make_unique<ExpertGroup>(ExpertShard(config.num_experts, comm->Rank(), comm->Size()), *comm);
    experts = {group->shard().begin(), group->shard().end()};
  }
  ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(config, checkpoint, experts));
  return std::unique_ptr<MoeModel>(new MoeModel(std::move(config), std::move(weights), std::move(group),
                                                options.gemm_inputs));
}

MoeModel::MoeModel(MoeConfig config, ModelWeights weights, std::unique_ptr<ExpertGroup> group,
                   cpu::GemmInputs gemm_inputs)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      group_(std::move(group)),
      gemm_inputs_(gemm_inputs),
      routed_tokens_(new std::atomic<int64_t>[config_.num_experts]()) {
  info_ = ModelInfo{.architecture = config_.architecture_name,
                    .vocab_size = config_.vocab_size,
                    .num_layers = config_.num_layers,
                    .num_kv_heads = config_.num_kv_heads,
                    .head_dim = config_.head_dim,
                    .max_context = config_.max_position_embeddings,
                    .eos_token_ids = config_.eos_token_ids};
}

absl::StatusOr<Tensor> MoeModel::Forward(const StepBatch& batch, KvCache& kv) {
  const KvCacheShape& kv_shape = kv.shape();
  if (kv.external() != nullptr) {
    return absl::InvalidArgumentError("the CPU model needs a host KV cache, not one kept by another backend");
  }
  if (kv_shape.num_layers != config_.num_layers || kv_shape.num_kv_heads != config_.num_kv_heads ||
      kv_shape.head_dim != config_.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache has ", kv_shape.num_layers, " layers x ", kv_shape.num_kv_heads, " heads x ",
        kv_shape.head_dim, ", model needs ", config_.num_layers, " x ", config_.num_kv_heads,
        " x ", config_.head_dim));
  }
  RETURN_IF_ERROR(ValidateStepBatch(batch, {.vocab_size = config_.vocab_size,
                                            .num_blocks = kv_shape.num_blocks,
                                            .block_size = kv_shape.block_size,
                                            .max_context = config_.max_position_embeddings}));
  const int64_t T = batch.num_tokens(), D = config_.hidden_size;

  Tensor x = Tensor::Empty(DType::kF32, {T, D});    // [T, D] residual stream
  Tensor h = Tensor::Empty(DType::kF32, {T, D});    // [T, D] normalized input of a block
  Tensor out = Tensor::Empty(DType::kF32, {T, D});  // [T, D] output of a block
  cpu::Embed(weights_.embed_tokens, batch.token_ids, x);
  for (int l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& layer = weights_.layers[l];
    cpu::RmsNorm(x, layer.input_norm, config_.rms_norm_eps, h);
    SelfAttention(layer.attention, config_, gemm_inputs_, h, batch, LayerKv{kv.key(l), kv.value(l)}, out);
    cpu::AddInPlace(out, x);
    cpu::RmsNorm(x, layer.post_attention_norm, config_.rms_norm_eps, h);
    RETURN_IF_ERROR(FeedForwardLayer(l, h, out));
    cpu::AddInPlace(out, x);
  }

  const int64_t R = batch.logits_rows.size();
  Tensor last = Tensor::Empty(DType::kF32, {R, D});  // [S', D]
  cpu::GatherRows(x, batch.logits_rows, last);
  cpu::RmsNorm(last, weights_.final_norm, config_.rms_norm_eps, last);
  Tensor logits = Tensor::Empty(DType::kF32, {R, config_.vocab_size});  // [S', V]
  cpu::Linear(last, weights_.lm_head, logits, gemm_inputs_);
  return logits;
}

absl::Status MoeModel::FeedForwardLayer(int l, const Tensor& h, Tensor& out) {
  FeedForwardContext context{.routing = {.top_k = config_.top_k, .renormalize = config_.norm_topk_prob},
                             .gemm_inputs = gemm_inputs_,
                             .num_experts = config_.num_experts,
                             .group = group_.get()};
  if (router_observer_) {
    context.on_router_logits = [this, l](const Tensor& router_logits) { router_observer_(l, router_logits); };
  }
  ASSIGN_OR_RETURN(const std::vector<int32_t> routed, FeedForward(weights_.layers[l].ffn, context, h, out));
  for (size_t e = 0; e < routed.size(); ++e) routed_tokens_[e].fetch_add(routed[e], std::memory_order_relaxed);
  return absl::OkStatus();
}

DType MoeModel::expert_dtype() const {
  for (const LayerWeights& layer : weights_.layers) {
    if (layer.ffn.is_moe()) return layer.ffn.experts.gate_up.dtype();
  }
  return DType::kF32;
}

absl::Status MoeModel::ForwardIdle() {
  if (group_ == nullptr) return absl::OkStatus();
  const int64_t D = config_.hidden_size;
  Tensor h = Tensor::Empty(DType::kF32, {0, D});    // [0, D]
  Tensor out = Tensor::Empty(DType::kF32, {0, D});  // [0, D]
  for (int l = 0; l < config_.num_layers; ++l) {
    if (weights_.layers[l].ffn.is_moe()) RETURN_IF_ERROR(FeedForwardLayer(l, h, out));
  }
  return absl::OkStatus();
}

std::vector<int64_t> MoeModel::RoutedTokensPerExpert() const {
  std::vector<int64_t> counts(config_.num_experts);
  for (int e = 0; e < config_.num_experts; ++e) counts[e] = routed_tokens_[e].load(std::memory_order_relaxed);
  return counts;
}

}  // namespace moe
