// Batch invariance: a row's result never depends on which other rows share its batch or where
// it sits in it. Checked bit for bit on every GEMM path of cpu::Linear (f32 and bf16 weights,
// f32 and bf16 inputs, K and N with tails), and on the whole model: a sequence's logits alone
// equal its logits inside batches of 2, 7 and 64, under either GemmInputs.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "moe/moe_model.h"
#include "runtime/cpu/linear.h"
#include "tests/sequence_runner.h"
#include "tests/test_util.h"
#include "tools/random_model.h"

namespace moe {
namespace {

constexpr int kBatchSizes[] = {2, 7, 64};

Tensor RandomTensor(std::vector<int64_t> shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor t = Tensor::Empty(DType::kF32, shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

bool SameBits(const float* a, const float* b, int64_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

struct GemmCase {
  DType weights;
  cpu::GemmInputs inputs;
  int64_t N, K;
};

class LinearInvarianceTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(LinearInvarianceTest, ARowIsTheSameAloneOrAnywhereInABatch) {
  const GemmCase c = GetParam();
  const Tensor w = RandomTensor({c.N, c.K}, 1).To(c.weights);
  const Tensor probe = RandomTensor({1, c.K}, 2);
  Tensor alone = Tensor::Empty(DType::kF32, {1, c.N});
  cpu::Linear(probe, w, alone, c.inputs);
  for (int batch : kBatchSizes) {
    const Tensor others = RandomTensor({batch, c.K}, 3 + batch);
    // The probe at the first row, the last, and in the middle, others in reverse order.
    for (int at : {0, batch - 1, batch / 2}) {
      Tensor x = Tensor::Empty(DType::kF32, {batch, c.K});
      for (int r = 0; r < batch; ++r) {
        const float* src = r == at ? probe.data<float>() : others.Row<float>(batch - 1 - r);
        std::copy_n(src, c.K, x.Row<float>(r));
      }
      Tensor y = Tensor::Empty(DType::kF32, {batch, c.N});
      cpu::Linear(x, w, y, c.inputs);
      EXPECT_TRUE(SameBits(alone.data<float>(), y.Row<float>(at), c.N))
          << "batch " << batch << ", probe at row " << at;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Paths, LinearInvarianceTest,
    ::testing::Values(GemmCase{DType::kBF16, cpu::GemmInputs::kBF16, 1536, 2048},
                      GemmCase{DType::kBF16, cpu::GemmInputs::kF32, 1536, 2048},
                      GemmCase{DType::kF32, cpu::GemmInputs::kF32, 200, 512},
                      GemmCase{DType::kBF16, cpu::GemmInputs::kBF16, 53, 100},   // tails in N and K
                      GemmCase{DType::kBF16, cpu::GemmInputs::kF32, 53, 37},
                      GemmCase{DType::kF32, cpu::GemmInputs::kF32, 53, 37}),
    [](const auto& info) {
      const GemmCase& c = info.param;
      return std::string(c.weights == DType::kBF16 ? "Bf16Weights" : "F32Weights") +
             (c.inputs == cpu::GemmInputs::kBF16 ? "Bf16Inputs" : "F32Inputs") + "_N" + std::to_string(c.N) +
             "_K" + std::to_string(c.K);
    });

class ModelInvarianceTest : public ::testing::TestWithParam<cpu::GemmInputs> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(std::filesystem::path(::testing::TempDir()) /
                           ("moe_batch_invariance_test." + std::to_string(getpid())));
    std::filesystem::remove_all(*dir_);
    auto written = WriteRandomModel(testing::TinyQwen3Config(),
                                    {.dtype = DType::kBF16, .seed = 5, .init_std = 0.15f}, *dir_);
    ASSERT_TRUE(written.ok()) << written.status();
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string* dir_;
};
std::string* ModelInvarianceTest::dir_ = nullptr;

TEST_P(ModelInvarianceTest, ASequenceHasTheSameLogitsAloneAndInBatchesOf2_7_64) {
  auto model = MoeModel::Load(*dir_, {.gemm_inputs = GetParam()});
  ASSERT_TRUE(model.ok()) << model.status();
  const GreedyOptions options{.max_new_tokens = 4, .keep_prompt_logits = true, .keep_step_logits = true};
  const std::vector<int32_t> probe = {3, 17, 99, 4, 8, 15, 16, 23, 42};
  auto alone = RunGreedy(**model, {probe}, options);
  ASSERT_TRUE(alone.ok()) << alone.status();
  const GreedyResult& a = alone->sequences[0];

  std::mt19937 rng(7);
  for (int batch : kBatchSizes) {
    // Other prompts of other lengths; the probe in the middle.
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < batch - 1; ++i) {
      std::vector<int32_t> p(1 + rng() % 13);
      for (int32_t& t : p) t = 3 + static_cast<int32_t>(rng() % 100);
      prompts.push_back(std::move(p));
    }
    const int at = batch / 2;
    prompts.insert(prompts.begin() + at, probe);
    auto batched = RunGreedy(**model, prompts, options);
    ASSERT_TRUE(batched.ok()) << batched.status();
    const GreedyResult& b = batched->sequences[at];
    EXPECT_EQ(a.tokens, b.tokens) << "batch " << batch;
    ASSERT_EQ(a.prompt_logits.size(), b.prompt_logits.size());
    for (size_t i = 0; i < a.prompt_logits.size(); ++i) {
      EXPECT_EQ(a.prompt_logits[i], b.prompt_logits[i]) << "batch " << batch << ", prompt position " << i;
    }
    ASSERT_EQ(a.step_logits.size(), b.step_logits.size());
    for (size_t i = 0; i < a.step_logits.size(); ++i) {
      EXPECT_EQ(a.step_logits[i], b.step_logits[i]) << "batch " << batch << ", decode step " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(GemmInputs, ModelInvarianceTest,
                         ::testing::Values(cpu::GemmInputs::kBF16, cpu::GemmInputs::kF32),
                         [](const auto& info) { return info.param == cpu::GemmInputs::kBF16 ? "Bf16" : "F32"; });

}  // namespace
}  // namespace moe
