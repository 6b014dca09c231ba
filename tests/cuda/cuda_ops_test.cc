// The CUDA element-wise, norm, attention-prologue and GEMM ops against their CPU
// references, on random inputs (rounded to bf16 so both sides see the same values), with
// every output poisoned before the run. Skipped without a GPU.
#include <cmath>
#include <vector>

#include "cuda_test_util.h"
#include "gtest/gtest.h"
#include "runtime/cpu/elementwise.h"
#include "runtime/cpu/linear.h"
#include "runtime/cpu/norm.h"
#include "runtime/cpu/rope.h"
#include "runtime/cuda/blas.h"
#include "runtime/cuda/elementwise.h"
#include "runtime/cuda/norm.h"
#include "runtime/cuda/qkv.h"

namespace moe {
namespace {

using cuda::DeviceTensor;
using testing::Download;
using testing::ExpectClose;
using testing::IdsTensor;
using testing::Poisoned;
using testing::RandomTensor;
using testing::Upload;

// One bf16 rounding of a value of magnitude ~1 plus fp32 reordering.
constexpr testing::Tolerance kBf16Out{.abs = 2e-3, .rel = 8e-3};

struct NormCase {
  int rows, cols;
  bool with_delta;
};

class CudaAddRmsNormTest : public ::testing::TestWithParam<NormCase> {};

TEST_P(CudaAddRmsNormTest, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const NormCase c = GetParam();
  Tensor residual = RandomTensor({c.rows, c.cols}, 1, 3.0f);  // [R, C]
  Tensor delta = RandomTensor({c.rows, c.cols}, 2);           // [R, C]
  Tensor weight = RandomTensor({c.cols}, 3);                  // [C]
  DeviceTensor d_residual = Upload(residual, DType::kF32), d_delta = Upload(delta, DType::kF32);
  DeviceTensor d_weight = Upload(weight, DType::kF32);
  DeviceTensor d_out = Poisoned(DType::kBF16, {c.rows, c.cols});
  cuda::AddRmsNorm({.residual = d_residual.data<float>(),
                    .delta = c.with_delta ? d_delta.data<float>() : nullptr,
                    .weight = d_weight.data<float>(),
                    .out = d_out.data<__nv_bfloat16>(),
                    .rows = c.rows, .cols = c.cols, .eps = 1e-6f}, nullptr);
  if (c.with_delta) cpu::AddInPlace(delta, residual);
  Tensor out = Tensor::Empty(DType::kF32, {c.rows, c.cols});
  cpu::RmsNorm(residual, weight, 1e-6f, out);
  ExpectClose(residual, Download(d_residual), {.abs = 0, .rel = 0}, "residual");
  ExpectClose(out, Download(d_out), kBf16Out, "normalized");
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAddRmsNormTest,
                         ::testing::Values(NormCase{1, 64, false}, NormCase{1, 64, true},
                                           NormCase{7, 300, true}, NormCase{33, 2048, true},
                                           NormCase{3, 4096, false}, NormCase{2, 17, true}),
                         [](const auto& info) {
                           const NormCase& c = info.param;
                           return "R" + std::to_string(c.rows) + "xC" + std::to_string(c.cols) +
                                  (c.with_delta ? "_add" : "");
                         });

TEST(CudaElementwise, EmbedGathersExactRows) {
  MOE_REQUIRE_GPU();
  const int V = 50, D = 300;
  Tensor table = RandomTensor({V, D}, 4);
  const std::vector<int32_t> ids = {0, 49, 7, 7, 23};
  DeviceTensor d_table = Upload(table, DType::kBF16), d_ids = Upload(IdsTensor(ids), DType::kI32);
  DeviceTensor d_out = Poisoned(DType::kF32, {5, D});
  cuda::Embed({.table = d_table.data<__nv_bfloat16>(), .token_ids = d_ids.data<int32_t>(),
               .out = d_out.data<float>(), .tokens = 5, .hidden = D}, nullptr);
  Tensor out = Tensor::Empty(DType::kF32, {5, D});
  cpu::Embed(table, ids, out);
  ExpectClose(out, Download(d_out), {.abs = 0, .rel = 0});
}

TEST(CudaElementwise, GatherRowsAndAddGated) {
  MOE_REQUIRE_GPU();
  const int T = 9, D = 257;
  Tensor x = RandomTensor({T, D}, 5);
  const std::vector<int32_t> rows = {8, 0, 3};
  DeviceTensor d_x = Upload(x, DType::kF32), d_rows = Upload(IdsTensor(rows), DType::kI32);
  DeviceTensor d_gathered = Poisoned(DType::kF32, {3, D});
  cuda::GatherRows({.x = d_x.data<float>(), .rows = d_rows.data<int32_t>(),
                    .out = d_gathered.data<float>(), .num_rows = 3, .hidden = D}, nullptr);
  Tensor gathered = Tensor::Empty(DType::kF32, {3, D});
  cpu::GatherRows(x, rows, gathered);
  ExpectClose(gathered, Download(d_gathered), {.abs = 0, .rel = 0}, "gather");

  Tensor y = RandomTensor({T, D}, 6), gate = RandomTensor({T}, 7, 4.0f), out = RandomTensor({T, D}, 8);
  DeviceTensor d_y = Upload(y, DType::kF32), d_gate = Upload(gate, DType::kF32);
  DeviceTensor d_out = Upload(out, DType::kF32), d_plain = Upload(out, DType::kF32);
  cuda::AddGated({.y = d_y.data<float>(), .gate = d_gate.data<float>(), .out = d_out.data<float>(),
                  .tokens = T, .hidden = D}, nullptr);
  cuda::AddGated({.y = d_y.data<float>(), .gate = nullptr, .out = d_plain.data<float>(),
                  .tokens = T, .hidden = D}, nullptr);
  Tensor gated = out.To(DType::kF32), plain = out.To(DType::kF32);
  for (int t = 0; t < T; ++t) {
    const float s = 1.0f / (1.0f + std::exp(-gate.data<float>()[t]));
    for (int c = 0; c < D; ++c) {
      gated.Row<float>(t)[c] += s * y.Row<float>(t)[c];
      plain.Row<float>(t)[c] += y.Row<float>(t)[c];
    }
  }
  ExpectClose(gated, Download(d_out), {.abs = 1e-6, .rel = 1e-6}, "gated");
  ExpectClose(plain, Download(d_plain), {.abs = 0, .rel = 0}, "plain");
}

TEST(CudaElementwise, SiluMul) {
  MOE_REQUIRE_GPU();
  for (const auto& [T, I] : std::vector<std::pair<int, int>>{{1, 32}, {5, 48}, {64, 768}, {3, 1409}}) {
    Tensor gate_up = RandomTensor({T, 2 * I}, 9, 4.0f);
    DeviceTensor d_in = Upload(gate_up, DType::kBF16), d_out = Poisoned(DType::kBF16, {T, I});
    cuda::SiluMul({.gate_up = d_in.data<__nv_bfloat16>(), .out = d_out.data<__nv_bfloat16>(),
                   .tokens = T, .intermediate = I}, nullptr);
    Tensor out = Tensor::Empty(DType::kF32, {T, I});
    cpu::SiluMul(gate_up, out);
    ExpectClose(out, Download(d_out), kBf16Out, "SiluMul T=" + std::to_string(T) + " I=" + std::to_string(I));
  }
}

struct QkvCase {
  int tokens, heads, kv_heads, head_dim;
  cuda::QkNormKind norm;
  bool bias;
  float clip;
  bool fused = false;  // q, k, v read from one [T, (H + 2 KVH) hd] projection, as the model does
  bool to_cache = false;  // k, v written to cache slots (the fused KV write), as the model does
};

class CudaPrepareQkvTest : public ::testing::TestWithParam<QkvCase> {};

TEST_P(CudaPrepareQkvTest, MatchesCpuComposition) {
  MOE_REQUIRE_GPU();
  const QkvCase c = GetParam();
  const int T = c.tokens, H = c.heads, KVH = c.kv_heads, hd = c.head_dim;
  const bool whole = c.norm == cuda::QkNormKind::kWholeProjection;
  Tensor q = RandomTensor({T, H * hd}, 10, 2.0f), k = RandomTensor({T, KVH * hd}, 11, 2.0f);
  Tensor v = RandomTensor({T, KVH * hd}, 12, 2.0f);
  Tensor qb = RandomTensor({H * hd}, 13), kb = RandomTensor({KVH * hd}, 14), vb = RandomTensor({KVH * hd}, 15);
  Tensor qn = RandomTensor({whole ? H * hd : hd}, 16), kn = RandomTensor({whole ? KVH * hd : hd}, 17);
  std::vector<int32_t> positions(T);
  for (int t = 0; t < T; ++t) positions[t] = (t * 7919) % 40000;  // up to long contexts
  const double theta = 1e6;

  DeviceTensor dq = Upload(q, DType::kF32), dk = Upload(k, DType::kF32), dv = Upload(v, DType::kF32);
  // The fused layout: each token's q, k and v rows side by side.
  const int width = (H + 2 * KVH) * hd;
  Tensor qkv = Tensor::Empty(DType::kF32, {T, width});
  for (int t = 0; t < T; ++t) {
    std::copy_n(q.Row<float>(t), H * hd, qkv.Row<float>(t));
    std::copy_n(k.Row<float>(t), KVH * hd, qkv.Row<float>(t) + H * hd);
    std::copy_n(v.Row<float>(t), KVH * hd, qkv.Row<float>(t) + (H + KVH) * hd);
  }
  DeviceTensor dqkv = Upload(qkv, DType::kF32);
  const float* fq = dqkv.data<float>();
  DeviceTensor dqb = Upload(qb, DType::kF32), dkb = Upload(kb, DType::kF32), dvb = Upload(vb, DType::kF32);
  DeviceTensor dqn = Upload(qn, DType::kF32), dkn = Upload(kn, DType::kF32);
  DeviceTensor dpos = Upload(IdsTensor(positions), DType::kI32);
  const std::vector<float> inv = cuda::RopeInverseFrequencies(theta, hd);
  Tensor inv_t = Tensor::Empty(DType::kF32, {hd / 2});
  std::copy(inv.begin(), inv.end(), inv_t.data<float>());
  DeviceTensor dinv = Upload(inv_t, DType::kF32);
  // With to_cache, k and v go to a "cache" of 2T + 2 slots: token t to slot 2t + 1, except
  // the last token's slot, which is out of range, so that token is not written at all.
  const int64_t kv_rows = c.to_cache ? 2 * T + 2 : T;
  std::vector<int64_t> slots(T);
  for (int t = 0; t < T; ++t) slots[t] = t + 1 < T ? 2 * t + 1 : kv_rows;
  Tensor slots_t = Tensor::Empty(DType::kI64, {T});
  std::copy(slots.begin(), slots.end(), slots_t.data<int64_t>());
  DeviceTensor dslots = Upload(slots_t, DType::kI64);
  DeviceTensor q_out = Poisoned(DType::kBF16, {T, H, hd}), k_out = Poisoned(DType::kBF16, {kv_rows, KVH, hd});
  DeviceTensor v_out = Poisoned(DType::kBF16, {kv_rows, KVH, hd});
  const bool norm = c.norm != cuda::QkNormKind::kNone;
  cuda::PrepareQkv({.q = c.fused ? fq : dq.data<float>(),
                    .k = c.fused ? fq + H * hd : dk.data<float>(),
                    .v = c.fused ? fq + (H + KVH) * hd : dv.data<float>(),
                    .row_stride = c.fused ? width : 0,
                    .q_bias = c.bias ? dqb.data<float>() : nullptr,
                    .k_bias = c.bias ? dkb.data<float>() : nullptr,
                    .v_bias = c.bias ? dvb.data<float>() : nullptr,
                    .qk_norm = c.norm,
                    .q_norm = norm ? dqn.data<float>() : nullptr,
                    .k_norm = norm ? dkn.data<float>() : nullptr,
                    .eps = 1e-6f, .clip = c.clip, .positions = dpos.data<int32_t>(),
                    .inv_freq = dinv.data<float>(), .q_out = q_out.data<__nv_bfloat16>(),
                    .k_out = k_out.data<__nv_bfloat16>(), .v_out = v_out.data<__nv_bfloat16>(),
                    .kv_slots = c.to_cache ? dslots.data<int64_t>() : nullptr, .num_kv_slots = kv_rows,
                    .tokens = T, .heads = H, .kv_heads = KVH, .head_dim = hd}, nullptr);

  // The CPU reference, in moe/attention_block.cc's order.
  if (c.bias) {
    cpu::AddBias(qb, q);
    cpu::AddBias(kb, k);
    cpu::AddBias(vb, v);
  }
  if (norm) {
    Tensor qr = whole ? q : q.Reshape({T * H, hd}), kr = whole ? k : k.Reshape({T * KVH, hd});
    cpu::RmsNorm(qr, qn, 1e-6f, qr);
    cpu::RmsNorm(kr, kn, 1e-6f, kr);
  }
  if (c.clip > 0) {
    cpu::Clamp(c.clip, q);
    cpu::Clamp(c.clip, k);
    cpu::Clamp(c.clip, v);
  }
  q = q.Reshape({T, H, hd});
  k = k.Reshape({T, KVH, hd});
  v = v.Reshape({T, KVH, hd});
  cpu::ApplyRope(positions, theta, q);
  cpu::ApplyRope(positions, theta, k);
  const testing::Tolerance tol{.abs = 4e-3, .rel = 8e-3};
  ExpectClose(q, Download(q_out), tol, "q");
  if (!c.to_cache) {
    ExpectClose(k, Download(k_out), tol, "k");
    ExpectClose(v, Download(v_out), tol, "v");
    return;
  }
  // Rows 2t + 1 hold tokens t < T - 1; every other row is untouched (still NaN poison).
  const Tensor k_cache = Download(k_out), v_cache = Download(v_out);
  const int64_t row = int64_t{KVH} * hd;
  for (int64_t r = 0; r < kv_rows; ++r) {
    const bool written = r % 2 == 1 && (r - 1) / 2 < T - 1;
    for (const Tensor* cache : {&k_cache, &v_cache}) {
      const float* got = cache->data<float>() + r * row;
      EXPECT_EQ(written, std::none_of(got, got + row, [](float x) { return std::isnan(x); })) << "cache row " << r;
    }
  }
  if (T < 2) return;
  Tensor k_got = Tensor::Empty(DType::kF32, {T - 1, KVH, hd}), v_got = Tensor::Empty(DType::kF32, {T - 1, KVH, hd});
  for (int t = 0; t + 1 < T; ++t) {
    std::copy_n(k_cache.data<float>() + slots[t] * row, row, k_got.data<float>() + t * row);
    std::copy_n(v_cache.data<float>() + slots[t] * row, row, v_got.data<float>() + t * row);
  }
  ExpectClose(k.Slice(0, T - 1), k_got, tol, "k in cache");
  ExpectClose(v.Slice(0, T - 1), v_got, tol, "v in cache");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaPrepareQkvTest,
    ::testing::Values(QkvCase{1, 4, 2, 32, cuda::QkNormKind::kPerHead, false, 0},     // Qwen3, tiny
                      QkvCase{17, 32, 4, 128, cuda::QkNormKind::kPerHead, false, 0},  // Qwen3-30B-A3B
                      QkvCase{5, 16, 16, 128, cuda::QkNormKind::kWholeProjection, false, 0},  // OLMoE
                      QkvCase{3, 4, 2, 16, cuda::QkNormKind::kWholeProjection, false, 0.5f},  // clip
                      QkvCase{6, 16, 16, 128, cuda::QkNormKind::kNone, true, 0},      // Qwen2-MoE bias
                      QkvCase{2, 32, 8, 128, cuda::QkNormKind::kNone, false, 0},      // Mixtral
                      QkvCase{9, 32, 4, 128, cuda::QkNormKind::kPerHead, false, 0, true},    // fused qkv
                      QkvCase{4, 16, 16, 128, cuda::QkNormKind::kNone, true, 0, true},       // fused, bias
                      QkvCase{7, 32, 4, 128, cuda::QkNormKind::kPerHead, false, 0, true, true},  // to cache
                      // Rows of exactly 48 KB: with the static scratch, over the default limit.
                      QkvCase{2, 64, 16, 128, cuda::QkNormKind::kPerHead, false, 0}),
    [](const auto& info) {
      const QkvCase& c = info.param;
      return "T" + std::to_string(c.tokens) + "_H" + std::to_string(c.heads) + "_KVH" +
             std::to_string(c.kv_heads) + "_hd" + std::to_string(c.head_dim) + "_norm" +
             std::to_string(static_cast<int>(c.norm)) + (c.bias ? "_bias" : "") + (c.clip > 0 ? "_clip" : "") + (c.fused ? "_fused" : "") +
             (c.to_cache ? "_to_cache" : "");
    });

struct GemmCase {
  int m, n, k;
  DType out;
};

class CudaLinearTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(CudaLinearTest, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const GemmCase c = GetParam();
  Tensor x = RandomTensor({c.m, c.k}, 20), w = RandomTensor({c.n, c.k}, 21, 0.1f);
  DeviceTensor dx = Upload(x, DType::kBF16), dw = Upload(w, DType::kBF16);
  DeviceTensor dy = Poisoned(c.out, {c.m, c.n});
  auto blas = cuda::Blas::Create(nullptr);
  ASSERT_TRUE(blas.ok()) << blas.status();
  ASSERT_TRUE(blas->Linear(dx, dw, dy).ok());
  Tensor y = Tensor::Empty(DType::kF32, {c.m, c.n});
  cpu::Linear(x, w.To(DType::kBF16), y);
  const double scale = 0.1 * std::sqrt(double(c.k));  // typical |y|
  const testing::Tolerance tol = c.out == DType::kF32 ? testing::Tolerance{.abs = 1e-5 * scale, .rel = 1e-4}
                                                      : testing::Tolerance{.abs = 4e-3 * scale, .rel = 8e-3};
  ExpectClose(y, Download(dy), tol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaLinearTest,
                         ::testing::Values(GemmCase{1, 64, 64, DType::kF32}, GemmCase{5, 300, 64, DType::kBF16},
                                           GemmCase{130, 4096, 2048, DType::kBF16},
                                           GemmCase{7, 151936, 256, DType::kF32},
                                           GemmCase{33, 128, 2048, DType::kF32}),
                         [](const auto& info) {
                           const GemmCase& c = info.param;
                           return "M" + std::to_string(c.m) + "_N" + std::to_string(c.n) + "_K" +
                                  std::to_string(c.k) + "_" + DTypeName(c.out);
                         });

TEST(CudaLinear, RejectsMismatchedShapes) {
  MOE_REQUIRE_GPU();
  DeviceTensor x = Poisoned(DType::kBF16, {2, 64}), w = Poisoned(DType::kBF16, {8, 32});
  DeviceTensor y = Poisoned(DType::kF32, {2, 8});
  auto blas = cuda::Blas::Create(nullptr);
  ASSERT_TRUE(blas.ok());
  const absl::Status s = blas->Linear(x, w, y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("[2, 64]"), std::string::npos) << s;
}

}  // namespace
}  // namespace moe
