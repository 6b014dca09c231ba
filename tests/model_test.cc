// Whole-model properties on the CPU backend that hold for any weights: the paged KV layout
// (block size), chunked prefill, batching and sharding leave every logit unchanged.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <numeric>

#include "gtest/gtest.h"
#include "moe/moe_model.h"
#include "runtime/checkpoint.h"
#include "runtime/safetensors.h"
#include "tests/sequence_runner.h"
#include "tests/test_util.h"
#include "tools/random_model.h"

namespace moe {
namespace {

const std::vector<std::vector<int32_t>> kPrompts = {
    {3, 17, 99, 4, 8, 15, 16, 23, 42, 108, 7, 1, 2, 90, 33, 61, 12, 5},
    {120, 6},
    {11, 22, 33, 44, 55, 66, 77},
};

class ModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // ctest runs each test in its own process, in parallel: one model per process.
    dir_ = new std::string(std::filesystem::path(::testing::TempDir()) /
                           ("moe_model_test." + std::to_string(getpid())));
    std::filesystem::remove_all(*dir_);
    auto written = WriteRandomModel(testing::TinyQwen3Config(),
                                    {.dtype = DType::kBF16, .seed = 11, .init_std = 0.15f}, *dir_);
    ASSERT_TRUE(written.ok()) << written.status();
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  static GreedyOutput Run(const std::string& dir, const std::vector<std::vector<int32_t>>& prompts,
                          GreedyOptions options) {
    auto model = MoeModel::Load(dir);
    EXPECT_TRUE(model.ok()) << model.status();
    options.keep_prompt_logits = true;
    options.keep_step_logits = true;
    auto out = RunGreedy(**model, prompts, options);
    EXPECT_TRUE(out.ok()) << out.status();
    return *out;
  }

  static void ExpectSame(const GreedyResult& a, const GreedyResult& b, const std::string& what) {
    EXPECT_EQ(a.tokens, b.tokens) << what;
    ASSERT_EQ(a.prompt_logits.size(), b.prompt_logits.size()) << what;
    for (size_t i = 0; i < a.prompt_logits.size(); ++i) {
      ASSERT_EQ(a.prompt_logits[i], b.prompt_logits[i]) << what << ": prompt position " << i;
    }
    ASSERT_EQ(a.step_logits.size(), b.step_logits.size()) << what;
    for (size_t i = 0; i < a.step_logits.size(); ++i) {
      ASSERT_EQ(a.step_logits[i], b.step_logits[i]) << what << ": decode step " << i;
    }
  }

  static std::string* dir_;
};
std::string* ModelTest::dir_ = nullptr;

TEST_F(ModelTest, BlockSizeDoesNotChangeLogits) {
  const GreedyOutput reference = Run(*dir_, kPrompts, {.max_new_tokens = 20, .block_size = 16});
  for (int block_size : {1, 4, 8, 64}) {
    const GreedyOutput out = Run(*dir_, kPrompts, {.max_new_tokens = 20, .block_size = block_size});
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      ExpectSame(reference.sequences[i], out.sequences[i],
                 "block size " + std::to_string(block_size) + ", prompt " + std::to_string(i));
    }
  }
}

TEST_F(ModelTest, ChunkedPrefillMatchesWholePrefill) {
  const GreedyOutput whole = Run(*dir_, kPrompts, {.max_new_tokens = 8, .block_size = 4});
  for (int chunk : {1, 3, 5}) {
    const GreedyOutput chunked =
        Run(*dir_, kPrompts, {.max_new_tokens = 8, .block_size = 4, .prefill_chunk = chunk});
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      ExpectSame(whole.sequences[i], chunked.sequences[i], "chunk " + std::to_string(chunk));
    }
  }
}

TEST_F(ModelTest, EachSequenceIsTheSameAloneOrBatched) {
  const GreedyOutput batched = Run(*dir_, kPrompts, {.max_new_tokens = 12});
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const GreedyOutput alone = Run(*dir_, {kPrompts[i]}, {.max_new_tokens = 12});
    ExpectSame(alone.sequences[0], batched.sequences[i], "prompt " + std::to_string(i));
  }
}

TEST_F(ModelTest, TeacherForcingAppendsTheGivenTokensAndRecordsTheArgmax) {
  const GreedyOutput free = Run(*dir_, kPrompts, {.max_new_tokens = 6});
  std::vector<std::vector<int32_t>> forced;
  for (const GreedyResult& r : free.sequences) {
    EXPECT_EQ(r.argmax, r.tokens);
    forced.push_back(r.tokens);
  }
  // Forced onto its own choices, the model repeats itself exactly.
  const GreedyOutput same = Run(*dir_, kPrompts, {.max_new_tokens = 6, .forced_tokens = &forced});
  for (size_t i = 0; i < kPrompts.size(); ++i) ExpectSame(free.sequences[i], same.sequences[i], "forced");
  // Forced elsewhere: the given tokens are appended; the first step (before any forced
  // token is read back) is unchanged, later ones follow the forced context.
  for (auto& f : forced) std::fill(f.begin(), f.end(), 7);
  const GreedyOutput other = Run(*dir_, kPrompts, {.max_new_tokens = 6, .forced_tokens = &forced});
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    EXPECT_EQ(other.sequences[i].tokens, std::vector<int32_t>(6, 7));
    EXPECT_EQ(other.sequences[i].argmax[0], free.sequences[i].argmax[0]);
    EXPECT_EQ(other.sequences[i].step_logits[0], free.sequences[i].step_logits[0]);
  }
  auto model = MoeModel::Load(*dir_);
  ASSERT_TRUE(model.ok());
  const std::vector<std::vector<int32_t>> too_short(kPrompts.size(), std::vector<int32_t>(2, 7));
  EXPECT_FALSE(RunGreedy(**model, kPrompts, {.max_new_tokens = 6, .forced_tokens = &too_short}).ok());
}

TEST_F(ModelTest, ShardedCheckpointGivesTheSameModel) {
  const std::string sharded = testing::ScratchDir("sharded");
  auto written = WriteRandomModel(testing::TinyQwen3Config(),
                                  {.dtype = DType::kBF16, .seed = 11, .init_std = 0.15f,
                                   .max_shard_bytes = 60000},
                                  sharded);
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_TRUE(std::filesystem::exists(sharded + "/model.safetensors.index.json"));
  const GreedyOutput a = Run(*dir_, kPrompts, {.max_new_tokens = 4});
  const GreedyOutput b = Run(sharded, kPrompts, {.max_new_tokens = 4});
  for (size_t i = 0; i < kPrompts.size(); ++i) ExpectSame(a.sequences[i], b.sequences[i], "sharded");
}

TEST_F(ModelTest, CountsTokensRoutedToEachExpert) {
  auto model = MoeModel::Load(*dir_);
  ASSERT_TRUE(model.ok());
  EXPECT_EQ((*model)->RoutedTokensPerExpert(), std::vector<int64_t>(8, 0));
  ASSERT_TRUE(RunGreedy(**model, kPrompts, {.max_new_tokens = 3}).ok());
  // Each token computed visits top_k = 2 experts in each of the 2 MoE layers; the last
  // generated token is never fed back.
  int64_t tokens = 0;
  for (const auto& p : kPrompts) tokens += p.size() + 2;
  const std::vector<int64_t> counts = (*model)->RoutedTokensPerExpert();
  EXPECT_EQ(std::accumulate(counts.begin(), counts.end(), int64_t{0}), tokens * 2 * 2);
  EXPECT_GT(std::count_if(counts.begin(), counts.end(), [](int64_t c) { return c > 0; }), 2);
}

TEST_F(ModelTest, RejectsBadBatchesWithoutCrashing) {
  auto model = MoeModel::Load(*dir_);
  ASSERT_TRUE(model.ok());
  auto kv = KvCache::Create({.num_layers = 2, .num_blocks = 4, .block_size = 4, .num_kv_heads = 2, .head_dim = 32});
  ASSERT_TRUE(kv.ok());
  StepBatch batch;
  batch.token_ids = {1, 500};  // 500 is outside the vocabulary of 128
  batch.positions = {0, 1};
  batch.query_starts = {0, 2};
  batch.context_lens = {2};
  batch.max_blocks_per_seq = 1;
  batch.block_tables = {3};
  batch.slot_mapping = {12, 13};
  batch.logits_rows = {1};
  auto logits = (*model)->Forward(batch, *kv);
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kInvalidArgument);
  batch.token_ids[1] = 5;
  batch.block_tables = {4};  // past the pool of 4 blocks
  EXPECT_EQ((*model)->Forward(batch, *kv).status().code(), absl::StatusCode::kInvalidArgument);
  batch.block_tables = {3};
  EXPECT_TRUE((*model)->Forward(batch, *kv).ok());
  EXPECT_FALSE(RunGreedy(**model, {{}}, {}).ok());
  EXPECT_FALSE(RunGreedy(**model, {std::vector<int32_t>(300, 1)}, {}).ok());  // past the context
}

// transformers v5 keeps each layer's experts fused in memory ([E, 2I, D] gate then up,
// [E, D, I] down); a checkpoint stored that way must load to the same model.
TEST(FusedExpertsTest, FusedCheckpointMatchesPerExpertCheckpoint) {
  const std::string src = testing::DataDir() + "/models/qwen3_moe_top4";
  const std::string dst = testing::ScratchDir("fused");
  auto config = LoadConfig(src);
  auto ckpt = Checkpoint::Open(src);
  ASSERT_TRUE(config.ok() && ckpt.ok());
  const int64_t E = config->num_experts, I = config->expert_intermediate_size, D = config->hidden_size;
  std::vector<TensorSpec> specs;
  std::map<std::string, std::vector<std::string>> parts;  // fused name -> per-expert sources
  for (const std::string& name : ckpt->names()) {
    const size_t at = name.find(".mlp.experts.");
    if (at == std::string::npos) {
      specs.push_back({name, ckpt->Get(name)->dtype(), ckpt->Get(name)->shape()});
      continue;
    }
    const std::string prefix = name.substr(0, at) + ".mlp.experts.";
    if (parts.count(prefix + "gate_up_proj")) continue;
    for (int e = 0; e < E; ++e) {
      const std::string expert = prefix + std::to_string(e) + ".";
      parts[prefix + "gate_up_proj"].push_back(expert + "gate_proj.weight");
      parts[prefix + "gate_up_proj"].push_back(expert + "up_proj.weight");
      parts[prefix + "down_proj"].push_back(expert + "down_proj.weight");
    }
    specs.push_back({prefix + "gate_up_proj", DType::kBF16, {E, 2 * I, D}});
    specs.push_back({prefix + "down_proj", DType::kBF16, {E, D, I}});
  }
  auto fill = [&](const TensorSpec& spec, absl::Span<std::byte> out) {
    std::vector<std::string> sources = parts.count(spec.name) ? parts[spec.name]
                                                              : std::vector<std::string>{spec.name};
    size_t offset = 0;
    for (const std::string& source : sources) {
      const Tensor t = *ckpt->Get(source);
      std::memcpy(out.data() + offset, t.raw(), t.nbytes());
      offset += t.nbytes();
    }
    ASSERT_EQ(offset, out.size()) << spec.name;
  };
  ASSERT_TRUE(WriteSafetensors(dst + "/model.safetensors", specs, fill).ok());
  std::filesystem::copy_file(src + "/config.json", dst + "/config.json");

  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {200, 100}};
  auto per_expert = MoeModel::Load(src);
  auto fused = MoeModel::Load(dst);
  ASSERT_TRUE(per_expert.ok() && fused.ok()) << fused.status();
  const GreedyOptions options{.max_new_tokens = 6, .keep_prompt_logits = true, .keep_step_logits = true};
  auto a = RunGreedy(**per_expert, prompts, options);
  auto b = RunGreedy(**fused, prompts, options);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(a->sequences[i].tokens, b->sequences[i].tokens);
    EXPECT_EQ(a->sequences[i].prompt_logits, b->sequences[i].prompt_logits);
    EXPECT_EQ(a->sequences[i].step_logits, b->sequences[i].step_logits);
  }
}

}  // namespace
}  // namespace moe
