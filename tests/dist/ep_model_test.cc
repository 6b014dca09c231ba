// Expert parallelism on the CPU, run under mpirun: each rank loads only its share of the
// experts and runs its own prompts; every logit must be bit-identical to one rank running
// all the prompts with every expert, and so every greedy token the same.
//
// Each rank also loads the whole model alone, as the reference, and compares its own
// prompts' rows. Prompts go to ranks round robin; some cases leave ranks with no prompt at
// all or finish them early (chunked prefill of uneven prompts), so they join the other
// ranks' steps with no tokens.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "moe/moe_model.h"
#include "runtime/dist/communicator.h"
#include "tests/dist/mpi_test_main.h"
#include "tests/sequence_runner.h"
#include "tests/test_util.h"

namespace moe {
namespace {

// n prompts of lengths 1 + (7 * i) % 23 with ids from a fixed LCG, all within the vocabulary.
std::vector<std::vector<int32_t>> Prompts(int n, int vocab) {
  std::vector<std::vector<int32_t>> prompts(n);
  uint32_t x = 12345;
  for (int i = 0; i < n; ++i) {
    const int len = 1 + (7 * i) % 23;
    for (int t = 0; t < len; ++t) {
      x = x * 1664525u + 1013904223u;
      prompts[i].push_back(static_cast<int32_t>((x >> 8) % vocab));
    }
  }
  return prompts;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Case {
  const char* model;
  int num_prompts;
  int prefill_chunk;
};

class ExpertParallelModel : public ::testing::TestWithParam<Case> {};

TEST_P(ExpertParallelModel, EqualsOneRankBitForBit) {
  const Case& c = GetParam();
  const std::string dir = testing::DataDir() + "/models/" + c.model;
  auto sharded = MoeModel::Load(dir, {.comm = &testing::Group()});
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto whole = MoeModel::Load(dir);
  ASSERT_TRUE(whole.ok()) << whole.status();
  const int R = testing::Group().Size(), me = testing::Group().Rank();

  const std::vector<std::vector<int32_t>> all = Prompts(c.num_prompts, (*whole)->info().vocab_size);
  std::vector<std::vector<int32_t>> mine;
  std::vector<int> index_of_mine;
  for (int i = 0; i < c.num_prompts; ++i) {
    if (i % R == me) mine.push_back(all[i]), index_of_mine.push_back(i);
  }
  GreedyOptions options{.max_new_tokens = 6, .prefill_chunk = c.prefill_chunk,
                        .keep_prompt_logits = true, .keep_step_logits = true};
  auto reference = RunGreedy(**whole, all, options);
  ASSERT_TRUE(reference.ok()) << reference.status();
  options.group = &testing::Group();
  auto ep = RunGreedy(**sharded, mine, options);
  ASSERT_TRUE(ep.ok()) << ep.status();

  ASSERT_EQ(ep->sequences.size(), mine.size());
  for (size_t j = 0; j < mine.size(); ++j) {
    const GreedyResult& got = ep->sequences[j];
    const GreedyResult& want = reference->sequences[index_of_mine[j]];
    SCOPED_TRACE(::testing::Message() << c.model << " prompt " << index_of_mine[j] << " on rank " << me << " of " << R);
    EXPECT_EQ(got.tokens, want.tokens);
    ASSERT_EQ(got.prompt_logits.size(), want.prompt_logits.size());
    for (size_t p = 0; p < got.prompt_logits.size(); ++p) {
      EXPECT_TRUE(SameBits(got.prompt_logits[p], want.prompt_logits[p])) << "prompt position " << p;
    }
    ASSERT_EQ(got.step_logits.size(), want.step_logits.size());
    for (size_t s = 0; s < got.step_logits.size(); ++s) {
      EXPECT_TRUE(SameBits(got.step_logits[s], want.step_logits[s])) << "step " << s;
    }
  }
  // Routing counts are summed over ranks, so every rank reports the whole group's.
  std::vector<int64_t> routed = (*sharded)->RoutedTokensPerExpert();
  std::vector<int64_t> total(routed);
  ASSERT_TRUE(testing::Group().AllReduce(absl::MakeSpan(total), dist::ReduceOp::kMax).ok());
  EXPECT_EQ(routed, total);
}

INSTANTIATE_TEST_SUITE_P(
    GoldenModels, ExpertParallelModel,
    ::testing::Values(Case{"qwen3_moe", 7, 0}, Case{"qwen3_moe", 1, 0}, Case{"qwen3_moe", 9, 5},
                      Case{"qwen3_moe_top4", 6, 0}, Case{"mixtral", 6, 4}, Case{"olmoe", 5, 0},
                      Case{"qwen2_moe", 6, 3}, Case{"qwen2_moe", 2, 0}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(info.param.model) + "_" + std::to_string(info.param.num_prompts) + "prompts" +
             (info.param.prefill_chunk > 0 ? "_chunked" : "");
    });

// Which ranks own which experts: contiguous ranges, the first E % R ranks one more.
TEST(ExpertShard, SplitsLikeTheDesignSays) {
  const ExpertShard a(8, 0, 3), b(8, 1, 3), c(8, 2, 3);
  EXPECT_EQ(a.begin(), 0);
  EXPECT_EQ(a.end(), 3);
  EXPECT_EQ(b.begin(), 3);
  EXPECT_EQ(b.end(), 6);
  EXPECT_EQ(c.begin(), 6);
  EXPECT_EQ(c.end(), 8);
  const ExpertShard idle(2, 3, 4);  // more ranks than experts: the last ones own none
  EXPECT_EQ(idle.count(), 0);
  EXPECT_EQ(ExpertShard(2, 1, 4).count(), 1);
}

}  // namespace
}  // namespace moe
