#include "moe/attention_block.h"

#include <cmath>

#include "runtime/cpu/attention.h"
#include "runtime/cpu/elementwise.h"
#include "runtime/cpu/linear.h"
#include "runtime/cpu/norm.h"
#include "runtime/cpu/rope.h"

namespace moe {
namespace {

// The q, k and v projections of x [T, D], as one group of products (one wake-up of the
// threads, not three), biases added where the checkpoint has them.
struct Qkv {
  Tensor q, k, v;  // [T, H*hd], [T, KVH*hd], [T, KVH*hd]
};
Qkv Project(const AttentionWeights& w, const Tensor& x, cpu::GemmInputs inputs) {
  const int64_t T = x.dim(0);
  Qkv out{.q = Tensor::Empty(DType::kF32, {T, w.q_proj.dim(0)}),
          .k = Tensor::Empty(DType::kF32, {T, w.k_proj.dim(0)}),
          .v = Tensor::Empty(DType::kF32, {T, w.v_proj.dim(0)})};
  const cpu::LinearProduct products[] = {
      {.x = x, .w = w.q_proj, .y = out.q}, {.x = x, .w = w.k_proj, .y = out.k}, {.x = x, .w = w.v_proj, .y = out.v}};
  cpu::Linear(products, inputs);
  if (w.q_bias.defined()) cpu::AddBias(w.q_bias, out.q);
  if (w.k_bias.defined()) cpu::AddBias(w.k_bias, out.k);
  if (w.v_bias.defined()) cpu::AddBias(w.v_bias, out.v);
  return out;
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
  auto [q, k, v] = Project(w, x, inputs);  // [T, H*hd], [T, KVH*hd], [T, KVH*hd]
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
