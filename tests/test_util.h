// Helpers shared by the tests: scratch directories and small random models.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe::testing {

// A fresh, empty directory under the test's temporary directory.
inline std::string ScratchDir(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "moe_tests" /
                                    (std::string(info->test_suite_name()) + "." + info->name() + "." + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// tests/data of the source tree the test was built from, or $MOE_TEST_DATA_DIR when set
// (test binaries run from another checkout, as on the GPU machine).
inline std::string DataDir() {
  const char* moved = std::getenv("MOE_TEST_DATA_DIR");
  return moved != nullptr && moved[0] != '\0' ? moved : MOE_TEST_DATA_DIR;
}

// A small Qwen3-MoE config.json: 2 layers, D 64, 4 heads / 2 KV heads of 32, 8 experts top-2.
inline nlohmann::json TinyQwen3Config() {
  return {{"architectures", {"Qwen3MoeForCausalLM"}},
          {"model_type", "qwen3_moe"},
          {"vocab_size", 128},
          {"hidden_size", 64},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 32},
          {"num_experts", 8},
          {"num_experts_per_tok", 2},
          {"moe_intermediate_size", 32},
          {"intermediate_size", 96},
          {"norm_topk_prob", true},
          {"max_position_embeddings", 256},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0},
          {"eos_token_id", 127},
          {"torch_dtype", "float32"}};
}

}  // namespace moe::testing
