// Whole-model goldens: our CPU forward pass against Hugging Face transformers (float32 on
// both sides) on tiny random models of each architecture, made and run by
// tools/goldens/make_goldens.py. Every prompt position's logits and every greedy step's
// logits must agree to a relative error of 1e-4 (max |ours - theirs| / max |theirs| per
// row), and the greedy continuations must be identical, with KV blocks of 4 and of 16.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>

#include "gtest/gtest.h"
#include "moe/moe_model.h"
#include "nlohmann/json.hpp"
#include "tests/sequence_runner.h"
#include "tests/test_util.h"

namespace moe {
namespace {

constexpr double kMaxRelativeError = 1e-4;

double RelativeError(const std::vector<float>& ours, const std::vector<float>& theirs) {
  if (ours.size() != theirs.size()) return INFINITY;  // a vocabulary mismatch fails every row
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < theirs.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(double{ours[i]} - theirs[i]));
    max_ref = std::max(max_ref, std::abs(double{theirs[i]}));
  }
  return max_diff / max_ref;
}

class GoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string dir() const { return testing::DataDir() + "/models/" + GetParam(); }

  nlohmann::json Golden() const {
    std::ifstream in(dir() + "/golden.json");
    EXPECT_TRUE(in.good()) << "missing " << dir() << "/golden.json";
    return nlohmann::json::parse(in);
  }
};

TEST_P(GoldenTest, LogitsAndGreedyContinuationsMatchTransformers) {
  const nlohmann::json golden = Golden();
  const auto prompts = golden["prompts"].get<std::vector<std::vector<int32_t>>>();
  const auto prompt_logits = golden["prompt_logits"].get<std::vector<std::vector<std::vector<float>>>>();
  const auto greedy_tokens = golden["greedy_tokens"].get<std::vector<std::vector<int32_t>>>();
  const auto greedy_logits = golden["greedy_logits"].get<std::vector<std::vector<std::vector<float>>>>();
  auto model = MoeModel::Load(dir());
  ASSERT_TRUE(model.ok()) << model.status();

  std::vector<std::vector<GreedyResult>> runs;
  for (int block_size : {4, 16}) {
    const GreedyOptions options{.max_new_tokens = static_cast<int>(greedy_tokens[0].size()),
                                .block_size = block_size,
                                .keep_prompt_logits = true,
                                .keep_step_logits = true};
    auto out = RunGreedy(**model, prompts, options);  // all prompts in one batch
    ASSERT_TRUE(out.ok()) << out.status();
    double worst_prompt = 0, worst_step = 0;
    for (size_t p = 0; p < prompts.size(); ++p) {
      const GreedyResult& r = out->sequences[p];
      ASSERT_EQ(r.prompt_logits.size(), prompt_logits[p].size());
      for (size_t i = 0; i < prompt_logits[p].size(); ++i) {
        const double err = RelativeError(r.prompt_logits[i], prompt_logits[p][i]);
        worst_prompt = std::max(worst_prompt, err);
        EXPECT_LE(err, kMaxRelativeError) << "prompt " << p << " position " << i;
      }
      EXPECT_EQ(r.tokens, greedy_tokens[p]) << "greedy continuation of prompt " << p;
      ASSERT_GE(r.step_logits.size(), greedy_logits[p].size());
      for (size_t i = 0; i < greedy_logits[p].size(); ++i) {
        const double err = RelativeError(r.step_logits[i], greedy_logits[p][i]);
        worst_step = std::max(worst_step, err);
        EXPECT_LE(err, kMaxRelativeError) << "prompt " << p << " decode step " << i;
      }
    }
    std::cout << GetParam() << " block " << block_size << ": max relative error "
              << worst_prompt << " (prompt logits), " << worst_step << " (decode steps)\n";
    RecordProperty("max_relative_error_block" + std::to_string(block_size),
                   std::to_string(std::max(worst_prompt, worst_step)));
    runs.push_back(std::move(out->sequences));
  }
  for (size_t p = 0; p < prompts.size(); ++p) {
    EXPECT_EQ(runs[0][p].prompt_logits, runs[1][p].prompt_logits) << "block 4 vs 16, prompt " << p;
    EXPECT_EQ(runs[0][p].step_logits, runs[1][p].step_logits) << "block 4 vs 16, prompt " << p;
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, GoldenTest,
                         ::testing::Values("qwen3_moe", "qwen3_moe_top4", "mixtral", "olmoe",
                                           "qwen2_moe"));

}  // namespace
}  // namespace moe
