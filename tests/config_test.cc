// config.json parsing for the four architectures, both transformers spellings, and clear
// errors for configs we cannot run.
#include "moe/config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

MoeConfig Shared(const std::string& name) {
  auto config = LoadConfigFile(std::string(MOE_SHARED_CONFIGS_DIR) + "/" + name);
  EXPECT_TRUE(config.ok()) << name << ": " << config.status();
  return config.ok() ? *config : MoeConfig{};
}

TEST(ConfigTest, LoadConfigFileNamesAMissingFile) {
  const absl::Status s = LoadConfigFile("/nonexistent/config.json").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("/nonexistent/config.json"));
}

TEST(ConfigTest, Qwen3_30B_A3B) {
  const MoeConfig c = Shared("qwen3-30b-a3b.json");
  EXPECT_EQ(c.arch, Architecture::kQwen3Moe);
  EXPECT_EQ(c.num_layers, 48);
  EXPECT_EQ(c.head_dim, 128);  // explicit, not 2048 / 32
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.top_k, 8);
  EXPECT_EQ(c.expert_intermediate_size, 768);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{151645});
  EXPECT_TRUE(c.IsMoeLayer(0) && c.IsMoeLayer(47));
}

TEST(ConfigTest, Mixtral_8x7B) {
  const MoeConfig c = Shared("mixtral-8x7b.json");
  EXPECT_EQ(c.arch, Architecture::kMixtral);
  EXPECT_EQ(c.head_dim, 128);  // 4096 / 32
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.expert_intermediate_size, 14336);
  EXPECT_TRUE(c.norm_topk_prob);  // Mixtral always renormalizes
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_EQ(c.qk_norm, QkNorm::kNone);
}

TEST(ConfigTest, Olmoe) {
  const MoeConfig c = Shared("olmoe-1b-7b.json");
  EXPECT_EQ(c.arch, Architecture::kOlmoe);
  EXPECT_EQ(c.qk_norm, QkNorm::kWholeProjection);
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.num_experts, 64);
  EXPECT_EQ(c.expert_intermediate_size, 1024);
}

TEST(ConfigTest, Qwen15_MoE_HasSharedExpertAndBias) {
  const MoeConfig c = Shared("qwen1.5-moe-a2.7b.json");
  EXPECT_EQ(c.arch, Architecture::kQwen2Moe);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_EQ(c.shared_expert_intermediate_size, 5632);
  EXPECT_EQ(c.num_experts, 60);
  EXPECT_EQ(c.top_k, 4);
}

TEST(ConfigTest, AcceptsTransformersV5Spellings) {
  nlohmann::json j = testing::TinyQwen3Config();
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  j["dtype"] = "bfloat16";
  auto c = ParseConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 5e5);
  EXPECT_EQ(c->dtype, DType::kBF16);
}

TEST(ConfigTest, DenseLayersFromMlpOnlyLayersAndSparseStep) {
  nlohmann::json j = testing::TinyQwen3Config();
  j["num_hidden_layers"] = 4;
  j["mlp_only_layers"] = {1};
  j["decoder_sparse_step"] = 2;
  auto c = ParseConfig(j.dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->IsMoeLayer(0));  // (0 + 1) % 2 != 0
  EXPECT_FALSE(c->IsMoeLayer(1));  // listed
  EXPECT_FALSE(c->IsMoeLayer(2));
  EXPECT_TRUE(c->IsMoeLayer(3));
}

TEST(ConfigTest, ErrorsNameTheKey) {
  auto error = [](nlohmann::json j) { return std::string(ParseConfig(j.dump()).status().message()); };
  nlohmann::json j = testing::TinyQwen3Config();
  j.erase("hidden_size");
  EXPECT_THAT(error(j), HasSubstr("missing \"hidden_size\""));
  j = testing::TinyQwen3Config();
  j["num_experts_per_tok"] = 9;
  EXPECT_THAT(error(j), HasSubstr("num_experts_per_tok (9) exceeds the number of experts (8)"));
  j = testing::TinyQwen3Config();
  j["num_key_value_heads"] = 3;
  EXPECT_THAT(error(j), HasSubstr("must be a multiple of num_key_value_heads (3)"));
  j = testing::TinyQwen3Config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_THAT(error(j), HasSubstr("rope type \"yarn\" is not supported"));
  j = testing::TinyQwen3Config();
  j["vocab_size"] = "many";
  EXPECT_THAT(error(j), HasSubstr("\"vocab_size\" must be a positive integer"));
}

TEST(ConfigTest, WrongTypesAreErrorsNotCrashes) {
  auto error = [](nlohmann::json j) { return std::string(ParseConfig(j.dump()).status().message()); };
  nlohmann::json j = testing::TinyQwen3Config();
  j["use_sliding_window"] = nullptr;  // null means the default
  EXPECT_TRUE(ParseConfig(j.dump()).ok());
  j["use_sliding_window"] = "yes";
  EXPECT_THAT(error(j), HasSubstr("\"use_sliding_window\" must be true or false"));
  j = testing::TinyQwen3Config();
  j["model_type"] = 3;
  j.erase("architectures");
  EXPECT_THAT(error(j), HasSubstr("\"model_type\" must be a string"));
  j = testing::TinyQwen3Config();
  j["rope_scaling"] = {{"type", nullptr}, {"rope_type", 7}};
  EXPECT_THAT(error(j), HasSubstr("\"rope_type\" must be a string"));
  j = testing::TinyQwen3Config();
  j["decoder_sparse_step"] = 4294967304;
  EXPECT_THAT(error(j), HasSubstr("\"decoder_sparse_step\" must be a non-negative integer"));
  j = testing::TinyQwen3Config();
  j["quantization_config"] = {{"quant_method", "fp8"}};
  EXPECT_THAT(error(j), HasSubstr("quantized checkpoints"));
}

TEST(ConfigTest, EosFromGenerationConfig) {
  const std::string dir = testing::ScratchDir("gen");
  std::ofstream(dir + "/config.json") << testing::TinyQwen3Config().dump();
  std::ofstream(dir + "/generation_config.json") << R"({"eos_token_id": [127, 5]})";
  auto c = LoadConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{127, 5}));
}

}  // namespace
}  // namespace moe
