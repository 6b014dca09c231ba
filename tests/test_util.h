// Helpers shared by the tests: scratch directories and small random models.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/random_model.h"

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
using moe::TinyQwen3Config;  // tools/random_model.h

}  // namespace moe::testing
