#include "moe/cuda/device_weights.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/elementwise.h"
#include "runtime/status_macros.h"

namespace moe::cuda {
namespace {

class Uploader {
 public:
  explicit Uploader(DeviceWeights& w) : w_(w) {}

  // GEMM weights go to bf16, everything else (norms, biases) to f32.
  absl::StatusOr<DeviceTensor> Gemm(const Tensor& t) { return Put(t, DType::kBF16); }
  absl::StatusOr<DeviceTensor> Vector(const Tensor& t) {
    if (!t.defined()) return DeviceTensor();
    return Put(t, DType::kF32);
  }

 private:
  absl::StatusOr<DeviceTensor> Put(const Tensor& t, DType dtype) {
    ASSIGN_OR_RETURN(DeviceTensor d, DeviceTensor::FromHost(t, dtype));
    w_.bytes += d.nbytes();
    return d;
  }
  DeviceWeights& w_;
};

// Rows of q_proj, k_proj and v_proj, one after the other, in bf16.
Tensor StackRows(const std::vector<const Tensor*>& parts) {
  int64_t rows = 0;
  for (const Tensor* p : parts) rows += p->dim(0);
  Tensor out = Tensor::Empty(DType::kBF16, {rows, parts[0]->dim(1)});
  char* at = static_cast<char*>(out.raw());
  for (const Tensor* p : parts) {
    const Tensor bf16 = p->dtype() == DType::kBF16 ? *p : p->To(DType::kBF16);
    std::memcpy(at, bf16.raw(), bf16.nbytes());
    at += bf16.nbytes();
  }
  return out;
}

absl::StatusOr<DeviceExpertWeights> Experts(Uploader& up, const ExpertWeights& e) {
  DeviceExpertWeights d;
  if (!e.gate_up.defined()) return d;
  ASSIGN_OR_RETURN(d.gate_up, up.Gemm(e.gate_up));
  ASSIGN_OR_RETURN(d.down, up.Gemm(e.down));
  return d;
}

absl::StatusOr<DeviceLayerWeights> Layer(Uploader& up, const LayerWeights& l) {
  DeviceLayerWeights d;
  ASSIGN_OR_RETURN(d.input_norm, up.Vector(l.input_norm));
  ASSIGN_OR_RETURN(d.post_attention_norm, up.Vector(l.post_attention_norm));
  const AttentionWeights& a = l.attention;
  ASSIGN_OR_RETURN(d.attention.qkv_proj, up.Gemm(StackRows({&a.q_proj, &a.k_proj, &a.v_proj})));
  ASSIGN_OR_RETURN(d.attention.o_proj, up.Gemm(a.o_proj));
  ASSIGN_OR_RETURN(d.attention.q_bias, up.Vector(a.q_bias));
  ASSIGN_OR_RETURN(d.attention.k_bias, up.Vector(a.k_bias));
  ASSIGN_OR_RETURN(d.attention.v_bias, up.Vector(a.v_bias));
  ASSIGN_OR_RETURN(d.attention.q_norm, up.Vector(a.q_norm));
  ASSIGN_OR_RETURN(d.attention.k_norm, up.Vector(a.k_norm));
  const FeedForwardWeights& f = l.ffn;
  if (f.is_moe()) {
    ASSIGN_OR_RETURN(d.ffn.router, up.Gemm(f.router));
  }
  ASSIGN_OR_RETURN(d.ffn.experts, Experts(up, f.experts));
  ASSIGN_OR_RETURN(d.ffn.shared, Experts(up, f.shared));
  if (f.shared_gate.defined()) {
    ASSIGN_OR_RETURN(d.ffn.shared_gate, up.Gemm(f.shared_gate));
  }
  return d;
}

}  // namespace

absl::StatusOr<DeviceWeights> UploadWeights(const MoeConfig& config, const ModelWeights& host) {
  DeviceWeights w;
  Uploader up(w);
  ASSIGN_OR_RETURN(w.embed_tokens, up.Gemm(host.embed_tokens));
  if (host.lm_head.raw() == host.embed_tokens.raw()) {
    w.lm_head = w.embed_tokens;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, up.Gemm(host.lm_head));
  }
  ASSIGN_OR_RETURN(w.final_norm, up.Vector(host.final_norm));
  for (const LayerWeights& l : host.layers) {
    ASSIGN_OR_RETURN(DeviceLayerWeights d, Layer(up, l));
    w.layers.push_back(std::move(d));
  }
  return w;
}

namespace {

class RandomMaker {
 public:
  RandomMaker(DeviceWeights& w, uint64_t seed) : w_(w), seed_(seed) {}

  // [rows, fan_in]-shaped GEMM weights (leading dims folded into rows), +-1/sqrt(fan_in).
  absl::StatusOr<DeviceTensor> Gemm(Shape shape) {
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape.back()));
    return Make(DType::kBF16, std::move(shape), 0.0f, scale);
  }
  // Norm weights near 1.
  absl::StatusOr<DeviceTensor> Norm(Shape shape) { return Make(DType::kF32, std::move(shape), 1.0f, 0.1f); }
  absl::StatusOr<DeviceTensor> Bias(Shape shape) { return Make(DType::kF32, std::move(shape), 0.0f, 0.1f); }

 private:
  absl::StatusOr<DeviceTensor> Make(DType dtype, Shape shape, float offset, float scale) {
    ASSIGN_OR_RETURN(DeviceTensor d, DeviceTensor::Empty(dtype, std::move(shape)));
    FillUniform({.data = d.raw(), .bf16 = dtype == DType::kBF16, .count = d.numel(),
                 .seed = seed_ + 0x9E3779B97F4A7C15ull * ++tensors_, .offset = offset, .scale = scale},
                nullptr);
    w_.bytes += d.nbytes();
    return d;
  }
  DeviceWeights& w_;
  uint64_t seed_;
  uint64_t tensors_ = 0;
};

absl::StatusOr<DeviceExpertWeights> RandomExperts(RandomMaker& r, int64_t E, int64_t I, int64_t D) {
  DeviceExpertWeights e;
  ASSIGN_OR_RETURN(e.gate_up, r.Gemm({E, 2 * I, D}));
  ASSIGN_OR_RETURN(e.down, r.Gemm({E, D, I}));
  return e;
}

}  // namespace

absl::StatusOr<DeviceWeights> RandomDeviceWeights(const MoeConfig& c, uint64_t seed) {
  DeviceWeights w;
  RandomMaker r(w, seed);
  const int64_t V = c.vocab_size, D = c.hidden_size, H = c.num_heads, KVH = c.num_kv_heads,
                hd = c.head_dim;
  ASSIGN_OR_RETURN(w.embed_tokens, r.Gemm({V, D}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, r.Gemm({V, D}));
  }
  ASSIGN_OR_RETURN(w.final_norm, r.Norm({D}));
  for (int l = 0; l < c.num_layers; ++l) {
    DeviceLayerWeights d;
    ASSIGN_OR_RETURN(d.input_norm, r.Norm({D}));
    ASSIGN_OR_RETURN(d.post_attention_norm, r.Norm({D}));
    ASSIGN_OR_RETURN(d.attention.qkv_proj, r.Gemm({(H + 2 * KVH) * hd, D}));
    ASSIGN_OR_RETURN(d.attention.o_proj, r.Gemm({D, H * hd}));
    if (c.attention_bias) {
      ASSIGN_OR_RETURN(d.attention.q_bias, r.Bias({H * hd}));
      ASSIGN_OR_RETURN(d.attention.k_bias, r.Bias({KVH * hd}));
      ASSIGN_OR_RETURN(d.attention.v_bias, r.Bias({KVH * hd}));
    }
    if (c.qk_norm != QkNorm::kNone) {
      const bool per_head = c.qk_norm == QkNorm::kPerHead;
      ASSIGN_OR_RETURN(d.attention.q_norm, r.Norm({per_head ? hd : H * hd}));
      ASSIGN_OR_RETURN(d.attention.k_norm, r.Norm({per_head ? hd : KVH * hd}));
    }
    if (c.IsMoeLayer(l)) {
      ASSIGN_OR_RETURN(d.ffn.router, r.Gemm({c.num_experts, D}));
      ASSIGN_OR_RETURN(d.ffn.experts, RandomExperts(r, c.num_experts, c.expert_intermediate_size, D));
      if (c.shared_expert_intermediate_size > 0) {
        ASSIGN_OR_RETURN(d.ffn.shared, RandomExperts(r, 1, c.shared_expert_intermediate_size, D));
        ASSIGN_OR_RETURN(d.ffn.shared_gate, r.Gemm({1, D}));
      }
    } else {
      ASSIGN_OR_RETURN(d.ffn.experts, RandomExperts(r, 1, c.dense_intermediate_size, D));
    }
    w.layers.push_back(std::move(d));
  }
  return w;
}

}  // namespace moe::cuda
