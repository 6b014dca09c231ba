// The command-line tools end to end: moe-make-model writes a loadable, deterministic,
// sharded model; moe-generate continues prompts exactly as transformers did and reports
// bad input with a message and a non-zero exit.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

struct Result {
  int exit_code;
  std::string output;  // stdout, then stderr
};

Result RunTool(const std::string& args) {
  const std::string command = std::string(MOE_BIN_DIR) + "/" + args + " 2>/tmp/moe_cli_stderr." +
                              std::to_string(getpid());
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  const int status = pclose(pipe);
  std::ifstream err("/tmp/moe_cli_stderr." + std::to_string(getpid()));
  std::stringstream err_text;
  err_text << err.rdbuf();
  return {WEXITSTATUS(status), out + err_text.str()};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(CliTest, MakeModelWritesDeterministicShardedModels) {
  const std::string a = testing::ScratchDir("a"), b = testing::ScratchDir("b");
  const std::string flags = " --config " + testing::DataDir() +
                            "/configs/olmoe-1b-7b.json --layers 2 --hidden_size 64 --heads 4"
                            " --kv_heads 2 --experts 8 --top_k 2 --expert_intermediate_size 32"
                            " --vocab_size 300 --dtype f32 --max_shard_bytes 200000 --seed 5";
  const Result first = RunTool("moe-make-model" + flags + " --out " + a);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_THAT(first.output, HasSubstr("OlmoeForCausalLM, 2 layers, 8 experts (top-2)"));
  ASSERT_EQ(RunTool("moe-make-model" + flags + " --out " + b).exit_code, 0);
  ASSERT_TRUE(std::filesystem::exists(a + "/model.safetensors.index.json"));
  for (const auto& entry : std::filesystem::directory_iterator(a)) {
    const std::string name = entry.path().filename();
    EXPECT_EQ(ReadFile(entry.path()), ReadFile(b + "/" + name)) << name << " differs between runs";
  }
  const auto config = nlohmann::json::parse(ReadFile(a + "/config.json"));
  EXPECT_EQ(config["num_hidden_layers"], 2);
  EXPECT_EQ(config["num_experts"], 8);
  EXPECT_EQ(config["torch_dtype"], "float32");

  const Result generated = RunTool("moe-generate --model " + a + " --prompts '1 2 3; 4' --max_new_tokens 5");
  ASSERT_EQ(generated.exit_code, 0) << generated.output;
  EXPECT_THAT(generated.output, HasSubstr("2 prompts, 4 prompt tokens, 10 new tokens"));
}

TEST(CliTest, GenerateContinuesPromptsAsTransformersDid) {
  const std::string dir = testing::DataDir() + "/models/mixtral";
  const auto golden = nlohmann::json::parse(ReadFile(dir + "/golden.json"));
  std::vector<std::string> prompts, expected;
  for (const auto& p : golden["prompts"]) prompts.push_back(absl::StrJoin(p.get<std::vector<int>>(), " "));
  for (const auto& t : golden["greedy_tokens"]) expected.push_back(absl::StrJoin(t.get<std::vector<int>>(), " "));
  const Result r = RunTool("moe-generate --model " + dir + " --max_new_tokens 20 --block_size 4 --prompts '" +
                       absl::StrJoin(prompts, ";") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(absl::StrJoin(expected, "\n") + "\n"));
}

TEST(CliTest, GenerateRejectsBadInput) {
  const std::string dir = testing::DataDir() + "/models/olmoe";
  Result r = RunTool("moe-generate --model " + dir + " --prompts '1 x 3'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("\"x\" is not a token id"));
  r = RunTool("moe-generate --model " + dir + " --prompts '1 99999'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("prompt[1] = 99999 is outside the vocabulary (size 256)"));
  r = RunTool("moe-generate --model /nonexistent --prompts 1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("cannot open /nonexistent/config.json"));
  r = RunTool("moe-generate --model " + dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("no prompts"));
}

}  // namespace
}  // namespace moe
