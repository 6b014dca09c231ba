// What the fuzz targets (fuzz/) found, each kept as a test: inputs that crashed a parser or
// hit undefined behaviour now get an error that says what is wrong.
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/config.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
#include "runtime/text/tokenizer.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::HasSubstr;

// A number too large for a double is nlohmann's out_of_range, not its parse_error: it used to
// escape the parsers' catch and end the process.
TEST(FuzzFindingsTest, ANumberTooLargeForADoubleInConfigJsonIsAnError) {
  nlohmann::json config = testing::TinyQwen3Config();
  std::string text = config.dump();
  text.insert(text.size() - 1, R"(, "rope_scaling_factor": 1e400)");
  const auto parsed = ParseConfig(text);
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("number overflow"));
}

TEST(FuzzFindingsTest, ANumberTooLargeForADoubleInASafetensorsHeaderIsAnError) {
  const std::string header = R"({"__metadata__": {"x": "y"}, "a": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}})";
  const std::string path = testing::ScratchDir("overflow") + "/model.safetensors";
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), sizeof(n));
    out << header << std::string(4, '\0');
  }
  const auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

// A tokenizer.json id that is not an integer in range: a float far past int (undefined
// behaviour when converted), a negative one, and one so large the vocabulary's table would
// take gigabytes.
TEST(FuzzFindingsTest, TokenIdsOutsideTheirRangeAreRefusedByName) {
  auto load = [](const nlohmann::json& vocab_id, const nlohmann::json& added_id) {
    const nlohmann::json tokenizer = {
        {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", vocab_id}}}, {"merges", nlohmann::json::array()}}},
        {"added_tokens", {{{"id", added_id}, {"content", "<s>"}, {"special", true}}}}};
    auto t = text::Tokenizer::FromJson(tokenizer, {});
    return t.ok() ? std::string("loaded") : std::string(t.status().message());
  };
  EXPECT_EQ(load(1, 2), "loaded");
  for (const nlohmann::json& bad : {nlohmann::json(1e125), nlohmann::json(-3), nlohmann::json(int64_t{1} << 31),
                                    nlohmann::json(1.5), nlohmann::json("7")}) {
    EXPECT_THAT(load(bad, 2), HasSubstr("the vocab's id of 'b' must be a token id")) << bad;
    EXPECT_THAT(load(1, bad), HasSubstr("an added token's id must be a token id")) << bad;
  }
}

}  // namespace
}  // namespace moe
