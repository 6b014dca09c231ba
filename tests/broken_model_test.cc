// Broken models fail to load cleanly, each with a message that says what is wrong and where.
#include <filesystem>
#include <fstream>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/moe_model.h"
#include "tests/test_util.h"
#include "tools/random_model.h"

namespace moe {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string LoadError(const std::string& dir) {
  auto model = MoeModel::Load(dir);
  EXPECT_FALSE(model.ok()) << "expected the model in " << dir << " to be rejected";
  return std::string(model.status().message());
}

std::string WriteModel(const std::string& dir, const nlohmann::json& config,
                       std::function<bool(TensorSpec&)> edit = nullptr) {
  RandomModelOptions options{.dtype = DType::kF32, .seed = 3, .init_std = 0.1f};
  options.edit_tensor = std::move(edit);
  auto written = WriteRandomModel(config, options, dir);
  EXPECT_TRUE(written.ok()) << written.status();
  return dir;
}

void Truncate(const std::string& path, uintmax_t keep) { std::filesystem::resize_file(path, keep); }

TEST(BrokenModelTest, IntactModelLoads) {
  const std::string dir = WriteModel(testing::ScratchDir("ok"), testing::TinyQwen3Config());
  auto model = MoeModel::Load(dir);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->info().architecture, "Qwen3MoeForCausalLM");
}

TEST(BrokenModelTest, TruncatedSafetensors) {
  const std::string dir = WriteModel(testing::ScratchDir("truncated"), testing::TinyQwen3Config());
  const std::string file = dir + "/model.safetensors";
  Truncate(file, std::filesystem::file_size(file) - 100);
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr(file), HasSubstr("lm_head.weight"), HasSubstr("truncated")));
}

TEST(BrokenModelTest, HeaderLengthPastEndOfFile) {
  const std::string dir = WriteModel(testing::ScratchDir("header"), testing::TinyQwen3Config());
  const std::string file = dir + "/model.safetensors";
  Truncate(file, 200);  // the header itself is longer than this
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr(file), HasSubstr("runs past the end of the file")));
}

// Each file of the model overwritten with random bytes of its own length, as a bad copy or a
// failing disk could leave it.
TEST(BrokenModelTest, FilesOverwrittenWithGarbage) {
  std::mt19937 rng(11);
  auto garble = [&rng](const std::string& path) {
    std::string bytes(std::filesystem::file_size(path), '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  for (int trial = 0; trial < 8; ++trial) {
    const std::string dir = WriteModel(testing::ScratchDir("garbage"), testing::TinyQwen3Config());
    const std::string weights = dir + "/model.safetensors";
    garble(weights);
    EXPECT_THAT(LoadError(dir), HasSubstr(weights)) << "trial " << trial;
  }
  const std::string dir = WriteModel(testing::ScratchDir("garbage_config"), testing::TinyQwen3Config());
  garble(dir + "/config.json");
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr("config.json"), HasSubstr("not valid JSON")));
}

TEST(BrokenModelTest, BadConfigJson) {
  const std::string dir = WriteModel(testing::ScratchDir("json"), testing::TinyQwen3Config());
  std::ofstream(dir + "/config.json", std::ios::trunc) << R"({"architectures": ["Qwen3Moe)";
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr("config.json"), HasSubstr("not valid JSON")));
}

TEST(BrokenModelTest, BadSafetensorsHeaderJson) {
  const std::string dir = WriteModel(testing::ScratchDir("header_json"), testing::TinyQwen3Config());
  const std::string file = dir + "/model.safetensors";
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(8);
  f.write("[", 1);  // the header now opens an array it never closes
  f.close();
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr(file), HasSubstr("header is not valid JSON")));
}

TEST(BrokenModelTest, WrongShape) {
  const std::string dir = WriteModel(testing::ScratchDir("shape"), testing::TinyQwen3Config(), [](TensorSpec& s) {
    if (s.name == "model.layers.1.self_attn.q_proj.weight") s.shape = {64, 64};
    return true;
  });
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr("model.layers.1.self_attn.q_proj.weight"),
                                    HasSubstr("expected shape [128, 64], found [64, 64]")));
}

TEST(BrokenModelTest, WrongDtype) {
  const std::string dir = WriteModel(testing::ScratchDir("dtype"), testing::TinyQwen3Config(), [](TensorSpec& s) {
    if (s.name == "model.norm.weight") s.dtype = DType::kI32;
    return true;
  });
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr("model.norm.weight"), HasSubstr("i32 is not a floating-point type")));
}

TEST(BrokenModelTest, MissingExpertTensor) {
  const std::string dir = WriteModel(testing::ScratchDir("expert"), testing::TinyQwen3Config(), [](TensorSpec& s) {
    return s.name != "model.layers.1.mlp.experts.5.up_proj.weight";
  });
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr("expected 8 experts in model.layers.1.mlp.experts"),
                                    HasSubstr("missing tensor \"model.layers.1.mlp.experts.5.up_proj.weight\"")));
}

TEST(BrokenModelTest, MissingNonExpertTensor) {
  const std::string dir = WriteModel(testing::ScratchDir("missing"), testing::TinyQwen3Config(), [](TensorSpec& s) {
    return s.name != "model.layers.0.self_attn.k_norm.weight";
  });
  EXPECT_THAT(LoadError(dir), HasSubstr("missing tensor \"model.layers.0.self_attn.k_norm.weight\""));
}

TEST(BrokenModelTest, UnknownArchitecture) {
  nlohmann::json config = testing::TinyQwen3Config();
  const std::string dir = WriteModel(testing::ScratchDir("arch"), config);
  config["architectures"] = {"DeepseekV9ForCausalLM"};
  config["model_type"] = "deepseek_v9";
  std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump();
  EXPECT_THAT(LoadError(dir), AllOf(HasSubstr("unsupported architecture \"DeepseekV9ForCausalLM\""),
                                    HasSubstr("Qwen3MoeForCausalLM, MixtralForCausalLM")));
}

TEST(BrokenModelTest, MissingFiles) {
  EXPECT_THAT(LoadError(testing::ScratchDir("nothing")), HasSubstr("cannot open"));
  const std::string dir = WriteModel(testing::ScratchDir("no_weights"), testing::TinyQwen3Config());
  std::filesystem::remove(dir + "/model.safetensors");
  EXPECT_THAT(LoadError(dir), HasSubstr("no model.safetensors or model.safetensors.index.json"));
}

}  // namespace
}  // namespace moe
