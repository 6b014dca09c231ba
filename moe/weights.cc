#include "moe/weights.h"

#include <array>
#include <cstring>
#include <functional>
#include <optional>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"

namespace moe {
namespace {

bool IsFloating(DType d) { return d != DType::kI32 && d != DType::kI64; }

// The dtype a GEMM weight is kept in on the CPU.
DType GemmDType(DType stored) { return stored == DType::kBF16 ? DType::kBF16 : DType::kF32; }

// Copies `src` into `dst` (same element count), converting the dtype if needed.
void CopyInto(const Tensor& src, Tensor dst) {
  if (src.dtype() == dst.dtype()) {
    std::memcpy(dst.raw(), src.raw(), src.nbytes());
  } else if (dst.dtype() == DType::kF32) {
    ConvertToFloat(src.dtype(), src.raw(), dst.data<float>(), src.numel());
  } else {
    Tensor f32 = src.To(DType::kF32);
    ConvertFromFloat(f32.data<float>(), dst.dtype(), dst.raw(), src.numel());
  }
}

class Loader {
 public:
  Loader(const MoeConfig& config, const Checkpoint& checkpoint, ExpertRange experts)
      : c_(config), ckpt_(checkpoint), range_(experts) {}

  // A tensor of the expected shape, in any floating dtype.
  absl::StatusOr<Tensor> Raw(const std::string& name, const Shape& expected) const {
    if (!ckpt_.Contains(name)) {
      return absl::NotFoundError(absl::StrCat("missing tensor \"", name, "\" in ", ckpt_.FileOf(name)));
    }
    ASSIGN_OR_RETURN(Tensor t, ckpt_.Get(name));
    if (t.shape() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", name, "\" in ", ckpt_.FileOf(name), ": expected shape ",
          ShapeString(expected), ", found ", ShapeString(t.shape())));
    }
    if (!IsFloating(t.dtype())) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" in ", ckpt_.FileOf(name),
                                                     ": dtype ", DTypeName(t.dtype()),
                                                     " is not a floating-point type"));
    }
    return t;
  }

  // A GEMM weight: zero-copy when the CPU kernels read its dtype. With `rows`, only those
  // rows of dimension 0 (a range of fused experts) are kept and converted.
  absl::StatusOr<Tensor> Gemm(const std::string& name, const Shape& expected,
                              std::optional<ExpertRange> rows = std::nullopt) const {
    ASSIGN_OR_RETURN(Tensor t, Raw(name, expected));
    if (rows.has_value()) t = t.Slice(rows->begin, rows->end);
    if (t.dtype() == DType::kF8E4M3) {
      return absl::UnimplementedError(absl::StrCat("tensor \"", name, "\" in ", ckpt_.FileOf(name),
                                                   ": fp8 weights need their scales, not supported yet"));
    }
    return t.dtype() == GemmDType(t.dtype()) ? t : t.To(DType::kF32);
  }

  // A norm weight or bias, as f32.
  absl::StatusOr<Tensor> Vector(const std::string& name, int64_t size) const {
    ASSIGN_OR_RETURN(Tensor t, Raw(name, {size}));
    return t.To(DType::kF32);
  }

  bool Has(const std::string& name) const { return ckpt_.Contains(name); }

  // Stacks experts [begin, end) named <prefix>.<e>.<gate|up|down>.weight, or slices them
  // from the fused <prefix>.gate_up_proj [E, 2I, D] and <prefix>.down_proj [E, D, I].
  absl::StatusOr<ExpertWeights> Experts(const std::string& prefix, int E, int I, const char* gate,
                                        const char* up, const char* down) const {
    if (Has(prefix + ".gate_up_proj")) {
      const int64_t D = c_.hidden_size;
      ExpertWeights w;
      ASSIGN_OR_RETURN(w.gate_up, Gemm(prefix + ".gate_up_proj", {E, 2 * I, D}, range_));
      ASSIGN_OR_RETURN(w.down, Gemm(prefix + ".down_proj", {E, D, I}, range_));
      return w;
    }
    return Stack(absl::StrCat("expected ", E, " experts in ", prefix), range_, I,
                 [&](int e, const char* which) {
                   return absl::StrCat(prefix, ".", e, ".", which, ".weight");
                 },
                 {gate, up, down});
  }

  // A dense SwiGLU MLP <prefix>.{gate,up,down}_proj.weight, as one expert.
  absl::StatusOr<ExpertWeights> Mlp(const std::string& prefix, int I) const {
    return Stack(absl::StrCat("MLP ", prefix), {0, 1}, I,
                 [&](int, const char* which) { return absl::StrCat(prefix, ".", which, ".weight"); },
                 {"gate_proj", "up_proj", "down_proj"});
  }

  absl::StatusOr<ExpertWeights> Stack(const std::string& what, ExpertRange range, int I,
                                      const std::function<std::string(int, const char*)>& name,
                                      const std::array<const char*, 3>& gate_up_down) const {
    const auto [gate, up, down] = gate_up_down;
    for (int e = range.begin; e < range.end; ++e) {
      for (const char* which : gate_up_down) {
        if (!Has(name(e, which))) {
          return absl::NotFoundError(absl::StrCat(what, ": missing tensor \"", name(e, which),
                                                  "\" in ", ckpt_.FileOf(name(e, which))));
        }
      }
    }
    const int64_t D = c_.hidden_size, n = range.end - range.begin;
    // Expert 0's dtype even on a rank that owns none: every rank stacks alike.
    ASSIGN_OR_RETURN(Tensor first, Raw(name(0, gate), {I, D}));
    const DType dtype = GemmDType(first.dtype());
    ExpertWeights w;
    w.gate_up = Tensor::Empty(dtype, {n, 2 * I, D});
    w.down = Tensor::Empty(dtype, {n, D, I});
    for (int64_t i = 0; i < n; ++i) {
      const int e = range.begin + static_cast<int>(i);
      Tensor gate_up = w.gate_up.Slice(i, i + 1).Reshape({2 * I, D});
      ASSIGN_OR_RETURN(Tensor g, Raw(name(e, gate), {I, D}));
      ASSIGN_OR_RETURN(Tensor u, Raw(name(e, up), {I, D}));
      ASSIGN_OR_RETURN(Tensor d, Raw(name(e, down), {D, I}));
      CopyInto(g, gate_up.Slice(0, I));
      CopyInto(u, gate_up.Slice(I, 2 * I));
      CopyInto(d, w.down.Slice(i, i + 1).Reshape({D, I}));
      // The stacked copy is what stays: the file's pages need not stay resident too.
      for (const char* which : gate_up_down) ckpt_.DropPages(name(e, which));
    }
    return w;
  }

  absl::StatusOr<AttentionWeights> Attention(const std::string& p) const {
    const int64_t D = c_.hidden_size, q = int64_t{c_.num_heads} * c_.head_dim,
                  kv = int64_t{c_.num_kv_heads} * c_.head_dim;
    AttentionWeights a;
    ASSIGN_OR_RETURN(a.q_proj, Gemm(p + ".q_proj.weight", {q, D}));
    ASSIGN_OR_RETURN(a.k_proj, Gemm(p + ".k_proj.weight", {kv, D}));
    ASSIGN_OR_RETURN(a.v_proj, Gemm(p + ".v_proj.weight", {kv, D}));
    ASSIGN_OR_RETURN(a.o_proj, Gemm(p + ".o_proj.weight", {D, q}));
    if (c_.attention_bias) {
      ASSIGN_OR_RETURN(a.q_bias, Vector(p + ".q_proj.bias", q));
      ASSIGN_OR_RETURN(a.k_bias, Vector(p + ".k_proj.bias", kv));
      ASSIGN_OR_RETURN(a.v_bias, Vector(p + ".v_proj.bias", kv));
    }
    if (c_.qk_norm != QkNorm::kNone) {
      const bool whole = c_.qk_norm == QkNorm::kWholeProjection;
      ASSIGN_OR_RETURN(a.q_norm, Vector(p + ".q_norm.weight", whole ? q : c_.head_dim));
      ASSIGN_OR_RETURN(a.k_norm, Vector(p + ".k_norm.weight", whole ? kv : c_.head_dim));
    }
    return a;
  }

  absl::StatusOr<FeedForwardWeights> FeedForward(int layer) const {
    const std::string l = absl::StrCat("model.layers.", layer);
    const int64_t D = c_.hidden_size;
    FeedForwardWeights f;
    if (!c_.IsMoeLayer(layer)) {
      ASSIGN_OR_RETURN(f.experts, Mlp(l + ".mlp", c_.dense_intermediate_size));
      return f;
    }
    if (c_.arch == Architecture::kMixtral && Has(l + ".block_sparse_moe.gate.weight")) {
      const std::string p = l + ".block_sparse_moe";
      ASSIGN_OR_RETURN(f.router, Gemm(p + ".gate.weight", {c_.num_experts, D}));
      ASSIGN_OR_RETURN(f.experts, Experts(p + ".experts", c_.num_experts, c_.expert_intermediate_size,
                                          "w1", "w3", "w2"));
      return f;
    }
    const std::string p = l + ".mlp";
    ASSIGN_OR_RETURN(f.router, Gemm(p + ".gate.weight", {c_.num_experts, D}));
    ASSIGN_OR_RETURN(f.experts, Experts(p + ".experts", c_.num_experts, c_.expert_intermediate_size,
                                        "gate_proj", "up_proj", "down_proj"));
    if (c_.shared_expert_intermediate_size > 0) {
      ASSIGN_OR_RETURN(f.shared, Mlp(p + ".shared_expert", c_.shared_expert_intermediate_size));
      ASSIGN_OR_RETURN(f.shared_gate, Gemm(p + ".shared_expert_gate.weight", {1, D}));
    }
    return f;
  }

 private:
  const MoeConfig& c_;
  const Checkpoint& ckpt_;
  const ExpertRange range_;  // the routed experts this rank keeps
};

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(const MoeConfig& c, const Checkpoint& ckpt, ExpertRange experts) {
  if (experts.end < 0) experts.end = c.num_experts;
  if (experts.begin < 0 || experts.begin > experts.end || experts.end > c.num_experts) {
    return absl::InvalidArgumentError(absl::StrCat("expert range [", experts.begin, ", ", experts.end,
                                                   ") is not within the model's ", c.num_experts, " experts"));
  }
  Loader load(c, ckpt, experts);
  ModelWeights w;
  const int64_t V = c.vocab_size, D = c.hidden_size;
  ASSIGN_OR_RETURN(w.embed_tokens, load.Gemm("model.embed_tokens.weight", {V, D}));
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l);
    LayerWeights layer;
    ASSIGN_OR_RETURN(layer.input_norm, load.Vector(p + ".input_layernorm.weight", D));
    ASSIGN_OR_RETURN(layer.attention, load.Attention(p + ".self_attn"));
    ASSIGN_OR_RETURN(layer.post_attention_norm, load.Vector(p + ".post_attention_layernorm.weight", D));
    ASSIGN_OR_RETURN(layer.ffn, load.FeedForward(l));
    w.layers.push_back(std::move(layer));
  }
  ASSIGN_OR_RETURN(w.final_norm, load.Vector("model.norm.weight", D));
  if (c.tie_word_embeddings) {  // as transformers ties them, a stored lm_head is ignored
    w.lm_head = w.embed_tokens;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, load.Gemm("lm_head.weight", {V, D}));
  }
  return w;
}

}  // namespace moe
