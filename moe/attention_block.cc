#include "moe/attention_block.h"

#include <cmath>

#include "runtime/cpu/attention.h"
#include "runtime/cpu/elementwise.h"
#include "runtime/cpu/linear.h"
#include "runtime/cpu/norm.h"
#include "runtime/cpu/rope.h"

namespace moe {
namespace {

// y = x @ w^T (+ bias): [T, N].
Tensor Project(const Tensor& x, const Tensor& w, const Tensor& bias, cpu::GemmInputs inputs) {
  Tensor y = Tensor::Empty(DType::kF32, {x.dim(0), w.dim(0)});
  cpu::Linear(x, w, y, inputs);
  if (bias.defined()) cpu::AddBias(bias, y);
  return y;
}

// RMSNorm over each head ([T*heads, hd] rows) or over the whole projection ([T, heads*hd]).
void QkNormalize(const Tensor& weight, const MoeConfig& c, int heads, Tensor& x) {
  const Tensor rows = c.qk_norm == QkNorm::kPerHead ? x.Reshape({x.dim(0) * heads, c.head_dim}) : x;
  Tensor out = rows;
  cpu::RmsNorm(rows, weight, c.rms_norm_eps, out);
}

}  // namespace

void SelfAttention(const AttentionWeights& w, const MoeConfig& c, cpu::GemmInputs inputs, const Tensor& x,
                   const StepBatch& batch, LayerKv kv, Tensor& out) {
  const int64_t T = x.dim(0), H = c.num_heads, KVH = c.num_kv_heads, hd = c.head_dim;
  Tensor q = Project(x, w.q_proj, w.q_bias, inputs);  // [T, H*hd]
  Tensor k = Project(x, w.k_proj, w.k_bias, inputs);  // [T, KVH*hd]
  Tensor v = Project(x, w.v_proj, w.v_bias, inputs);  // [T, KVH*hd]
  if (c.qk_norm != QkNorm::kNone) {
    QkNormalize(w.q_norm, c, c.num_heads, q);
    QkNormalize(w.k_norm, c, c.num_kv_heads, k);
  }
  if (c.clip_qkv > 0) {
    cpu::Clamp(c.clip_qkv, q);
    cpu::Clamp(c.clip_qkv, k);
    cpu::Clamp(c.clip_qkv, v);
  }
  q = q.Reshape({T, H, hd});
  k = k.Reshape({T, KVH, hd});
  v = v.Reshape({T, KVH, hd});
  cpu::ApplyRope(batch.positions, c.rope_theta, q);
  cpu::ApplyRope(batch.positions, c.rope_theta, k);
  cpu::WriteKv(k, v, batch, kv.key, kv.value);

  Tensor attn = Tensor::Empty(DType::kF32, {T, H, hd});  // [T, H, hd]
  const cpu::AttentionParams params{.scale = 1.0f / std::sqrt(static_cast<float>(hd)),
                                    .sliding_window = c.sliding_window};
  cpu::PagedAttention(q, kv.key, kv.value, batch, params, attn);
  cpu::Linear(attn.Reshape({T, H * hd}), w.o_proj, out, inputs);
}

}  // namespace moe
