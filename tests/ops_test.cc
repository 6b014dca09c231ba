// CPU ops against plain, obviously-correct formulations in double precision, on random
// inputs and awkward shapes. These are the references the CUDA kernels are tested against,
// so they are checked independently here.
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "moe/dispatch.h"
#include "moe/experts.h"
#include "moe/routing.h"
#include "runtime/cpu/attention.h"
#include "runtime/cpu/linear.h"
#include "runtime/cpu/rope.h"

namespace moe {
namespace {

Tensor Random(Shape shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  std::normal_distribution<float> normal(0.0f, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

TEST(LinearTest, MatchesDoubleReferenceForF32AndBf16Weights) {
  std::mt19937 rng(1);
  for (auto [T, K, N] : {std::tuple{1, 7, 1}, {3, 64, 17}, {5, 129, 33}, {2, 256, 100}}) {
    const Tensor x = Random({T, K}, rng);
    const Tensor w32 = Random({N, K}, rng);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      const Tensor w = w32.To(dtype);
      const Tensor wf = w.To(DType::kF32);  // the values the kernel actually sees
      Tensor y = Tensor::Empty(DType::kF32, {T, N});
      y.Fill(NAN);
      cpu::Linear(x, w, y);
      for (int t = 0; t < T; ++t) {
        for (int n = 0; n < N; ++n) {
          double ref = 0;
          for (int k = 0; k < K; ++k) ref += double{x.Row<float>(t)[k]} * wf.Row<float>(n)[k];
          EXPECT_NEAR(y.Row<float>(t)[n], ref, 1e-5 * (1 + std::abs(ref))) << T << "x" << K << "x" << N;
        }
      }
    }
  }
}

TEST(LinearTest, RowResultDoesNotDependOnBatch) {
  std::mt19937 rng(2);
  const Tensor x = Random({9, 96}, rng);
  const Tensor w = Random({37, 96}, rng).To(DType::kBF16);
  Tensor all = Tensor::Empty(DType::kF32, {9, 37});
  cpu::Linear(x, w, all);
  Tensor one = Tensor::Empty(DType::kF32, {1, 37});
  cpu::Linear(x.Slice(4, 5), w, one);
  for (int n = 0; n < 37; ++n) EXPECT_EQ(one.data<float>()[n], all.Row<float>(4)[n]);
}

TEST(RopeTest, RotatesHalvesByPositionTimesFrequency) {
  std::mt19937 rng(3);
  const std::vector<int32_t> positions = {0, 1, 7, 300};
  const double theta = 10000.0;
  for (int hd : {2, 16, 128}) {
    const Tensor x = Random({4, 3, hd}, rng);
    Tensor y = x.To(DType::kF32);
    cpu::ApplyRope(positions, theta, y);
    for (int t = 0; t < 4; ++t) {
      for (int h = 0; h < 3; ++h) {
        const float* in = x.Row<float>(t) + h * hd;
        const float* out = y.Row<float>(t) + h * hd;
        for (int i = 0; i < hd / 2; ++i) {
          const double angle = positions[t] * std::pow(theta, -2.0 * i / hd);
          const double a = in[i], b = in[i + hd / 2];
          EXPECT_NEAR(out[i], a * std::cos(angle) - b * std::sin(angle), 2e-4);
          EXPECT_NEAR(out[i + hd / 2], b * std::cos(angle) + a * std::sin(angle), 2e-4);
        }
      }
    }
  }
}

// Contiguous causal attention in double over the sequence's own K/V, the textbook way.
std::vector<double> NaiveAttention(const Tensor& q, const Tensor& k, const Tensor& v, int t,
                                   int h, int pos_first, int pos, int window) {
  const int hd = q.dim(2), group = q.dim(1) / k.dim(1), kvh = h / group;
  const int lo = window > 0 ? std::max(0, pos - window + 1) : 0;
  std::vector<double> scores;
  double max_score = -INFINITY;
  for (int j = lo; j <= pos; ++j) {
    double dot = 0;
    for (int i = 0; i < hd; ++i) dot += double{q.Row<float>(t)[h * hd + i]} * k.Row<float>(pos_first + j)[kvh * hd + i];
    scores.push_back(dot / std::sqrt(double(hd)));
    max_score = std::max(max_score, scores.back());
  }
  double sum = 0;
  for (double& s : scores) sum += s = std::exp(s - max_score);
  std::vector<double> out(hd, 0.0);
  for (int j = lo; j <= pos; ++j) {
    for (int i = 0; i < hd; ++i) out[i] += scores[j - lo] / sum * v.Row<float>(pos_first + j)[kvh * hd + i];
  }
  return out;
}

TEST(PagedAttentionTest, MatchesContiguousAttentionThroughScatteredBlocks) {
  std::mt19937 rng(4);
  const int H = 4, KVH = 2, hd = 16, block_size = 4, num_blocks = 16;
  const std::vector<int> lens = {1, 9, 6};  // whole sequences, all in this step
  for (int window : {0, 3}) {
    StepBatch batch;
    batch.max_blocks_per_seq = 3;
    batch.query_starts = {0};
    std::vector<int> blocks(num_blocks);
    std::iota(blocks.begin(), blocks.end(), 0);
    std::shuffle(blocks.begin(), blocks.end(), rng);
    int next_block = 0;
    for (int len : lens) {
      std::vector<int32_t> table(batch.max_blocks_per_seq, 0);
      for (int b = 0; b * block_size < len; ++b) table[b] = blocks[next_block++];
      for (int p = 0; p < len; ++p) {
        batch.token_ids.push_back(0);
        batch.positions.push_back(p);
        batch.slot_mapping.push_back(int64_t{table[p / block_size]} * block_size + p % block_size);
      }
      batch.block_tables.insert(batch.block_tables.end(), table.begin(), table.end());
      batch.query_starts.push_back(batch.num_tokens());
      batch.context_lens.push_back(len);
    }
    const int T = batch.num_tokens();
    const Tensor q = Random({T, H, hd}, rng), k = Random({T, KVH, hd}, rng), v = Random({T, KVH, hd}, rng);
    Tensor key_cache = Random({num_blocks, block_size, KVH, hd}, rng, 100.0f);  // garbage elsewhere
    Tensor value_cache = Random({num_blocks, block_size, KVH, hd}, rng, 100.0f);
    cpu::WriteKv(k, v, batch, key_cache, value_cache);
    Tensor out = Tensor::Empty(DType::kF32, {T, H, hd});
    out.Fill(NAN);
    cpu::PagedAttention(q, key_cache, value_cache, batch,
                        {.scale = 1.0f / std::sqrt(float(hd)), .sliding_window = window}, out);
    for (int s = 0; s < batch.num_seqs(); ++s) {
      for (int t = batch.query_starts[s]; t < batch.query_starts[s + 1]; ++t) {
        for (int h = 0; h < H; ++h) {
          const auto ref = NaiveAttention(q, k, v, t, h,
                                          batch.query_starts[s], batch.positions[t], window);
          for (int i = 0; i < hd; ++i) EXPECT_NEAR(out.Row<float>(t)[h * hd + i], ref[i], 1e-5);
        }
      }
    }
  }
}

TEST(RouteTest, SoftmaxTopKWithTiesToTheLowerExpert) {
  Tensor logits = Tensor::Empty(DType::kF32, {2, 4});
  const float values[] = {1.0f, 3.0f, 3.0f, 0.5f,  // tie between experts 1 and 2
                          -1.0f, 0.0f, 2.0f, 2.0f};
  std::copy(values, values + 8, logits.data<float>());
  const Routing plain = Route(logits, {.top_k = 2, .renormalize = false});
  EXPECT_EQ(plain.topk_ids.data<int32_t>()[0], 1);
  EXPECT_EQ(plain.topk_ids.data<int32_t>()[1], 2);
  EXPECT_EQ(plain.topk_ids.data<int32_t>()[2], 2);
  EXPECT_EQ(plain.topk_ids.data<int32_t>()[3], 3);
  const double z = std::exp(1.0) + 2 * std::exp(3.0) + std::exp(0.5);
  EXPECT_NEAR(plain.topk_weights.data<float>()[0], std::exp(3.0) / z, 1e-6);
  const Routing renorm = Route(logits, {.top_k = 2, .renormalize = true});
  EXPECT_NEAR(renorm.topk_weights.data<float>()[0], 0.5, 1e-6);
  EXPECT_NEAR(renorm.topk_weights.data<float>()[2] + renorm.topk_weights.data<float>()[3], 1.0, 1e-6);
}

// Runs the routed experts through Dispatch / RunExperts / Combine and compares with a
// per-token loop over its chosen experts.
void CheckExpertsAgainstPerTokenLoop(const std::vector<int32_t>& ids, int T, int K, int E) {
  std::mt19937 rng(5);
  const int D = 24, I = 10;
  ExpertWeights w{Random({E, 2 * I, D}, rng, 0.3f).To(DType::kBF16), Random({E, D, I}, rng, 0.3f).To(DType::kBF16)};
  const Tensor x = Random({T, D}, rng);
  Tensor topk_ids = Tensor::Empty(DType::kI32, {T, K});
  std::copy(ids.begin(), ids.end(), topk_ids.data<int32_t>());
  const Tensor topk_weights = Random({T, K}, rng);

  const DispatchPlan plan = Dispatch(topk_ids, E);
  Tensor xs = Tensor::Empty(DType::kF32, {T * K, D}), ys = Tensor::Empty(DType::kF32, {T * K, D});
  ys.Fill(NAN);
  Gather(x, plan, xs);
  RunExperts(w, cpu::GemmInputs::kF32, xs, plan.expert_offsets, ys);
  Tensor out = Tensor::Empty(DType::kF32, {T, D});
  Combine(ys, plan, topk_weights, out);

  const Tensor gate_up = w.gate_up.To(DType::kF32), down = w.down.To(DType::kF32);
  for (int t = 0; t < T; ++t) {
    std::vector<double> ref(D, 0.0);
    for (int k = 0; k < K; ++k) {
      const int e = ids[t * K + k];
      std::vector<double> h(I);
      for (int i = 0; i < I; ++i) {
        double g = 0, u = 0;
        for (int d = 0; d < D; ++d) {
          g += double{x.Row<float>(t)[d]} * gate_up.data<float>()[(int64_t(e) * 2 * I + i) * D + d];
          u += double{x.Row<float>(t)[d]} * gate_up.data<float>()[(int64_t(e) * 2 * I + I + i) * D + d];
        }
        h[i] = g / (1 + std::exp(-g)) * u;
      }
      for (int d = 0; d < D; ++d) {
        double y = 0;
        for (int i = 0; i < I; ++i) y += h[i] * down.data<float>()[(int64_t(e) * D + d) * I + i];
        ref[d] += topk_weights.Row<float>(t)[k] * y;
      }
    }
    for (int d = 0; d < D; ++d) EXPECT_NEAR(out.Row<float>(t)[d], ref[d], 1e-4 * (1 + std::abs(ref[d])));
  }
}

TEST(ExpertsTest, SpreadTokens) { CheckExpertsAgainstPerTokenLoop({0, 3, 2, 1, 3, 0, 5, 2}, 4, 2, 6); }
TEST(ExpertsTest, AllTokensOnOneExpertAndEmptyExperts) {
  CheckExpertsAgainstPerTokenLoop({4, 4, 4}, 3, 1, 6);
}
TEST(ExpertsTest, SingleToken) { CheckExpertsAgainstPerTokenLoop({1, 0, 5}, 1, 3, 6); }

}  // namespace
}  // namespace moe
