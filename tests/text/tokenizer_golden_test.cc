// Tokenizer vs Hugging Face `tokenizers`: ids and decodes for the hard-string corpus on every
// vocabulary in tests/data/tokenizers/ (made by tools/tokenizer_goldens/).
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"
#include "runtime/text/tokenizer_config.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

std::string TokenizerDir(const std::string& name) {
  return std::string(MOE_TEXT_TEST_DATA_DIR) + "/tokenizers/" + name;
}

json LoadGoldens(const std::string& name) {
  auto text = ReadTextFile(TokenizerDir(name) + "/goldens.json");
  EXPECT_TRUE(text.ok()) << text.status();
  return json::parse(text.value_or("{}"));
}

std::string Show(const std::string& s) { return "\"" + absl::CEscape(s) + "\""; }

class TokenizerGoldenTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::FromDirectory(TokenizerDir(GetParam()));
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(tok).value();
    goldens_ = LoadGoldens(GetParam());
    ASSERT_GT(goldens_["encode"].size(), 100u);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
  json goldens_;
};

TEST_P(TokenizerGoldenTest, EncodeMatchesTokenizers) {
  for (const json& c : goldens_["encode"]) {
    const std::string text = c["text"].get<std::string>();
    auto ids = tokenizer_->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status() << " for " << Show(text);
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << "text " << Show(text);
    auto plain = tokenizer_->Encode(text, {.add_special_tokens = false});
    ASSERT_TRUE(plain.ok()) << plain.status();
    EXPECT_EQ(*plain, c["ids_plain"].get<std::vector<int32_t>>()) << "text " << Show(text);
  }
}

TEST_P(TokenizerGoldenTest, DecodeOfEncodingMatchesTokenizers) {
  for (const json& c : goldens_["encode"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const auto plain = c["ids_plain"].get<std::vector<int32_t>>();
    auto text = tokenizer_->Decode(plain);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(Show(*text), Show(c["decoded"].get<std::string>()));
    auto skipped = tokenizer_->Decode(ids, {.skip_special_tokens = true});
    ASSERT_TRUE(skipped.ok()) << skipped.status();
    EXPECT_EQ(Show(*skipped), Show(c["decoded_skip"].get<std::string>()));
  }
}

TEST_P(TokenizerGoldenTest, RoundTripIsLosslessWhereTokenizersIs) {
  int checked = 0;
  for (const json& c : goldens_["encode"]) {
    const std::string text = c["text"].get<std::string>();
    if (c["decoded"] != c["text"]) continue;  // normalizing or special-token text
    auto ids = tokenizer_->Encode(text, {.add_special_tokens = false});
    ASSERT_TRUE(ids.ok()) << ids.status();
    auto back = tokenizer_->Decode(*ids);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(Show(*back), Show(text));
    ++checked;
  }
  // The byte-level vocabularies without a normalizer are lossless on everything but
  // special-token strings.
  if (goldens_["lossless"].get<bool>()) {
    EXPECT_GE(checked, 120);
  }
}

TEST_P(TokenizerGoldenTest, DecodeArbitraryIdsMatchesTokenizers) {
  for (const json& c : goldens_["decode"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    auto text = tokenizer_->Decode(ids);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(Show(*text), Show(c["text"].get<std::string>())) << "ids " << c["ids"].dump();
    auto skipped = tokenizer_->Decode(ids, {.skip_special_tokens = true});
    ASSERT_TRUE(skipped.ok()) << skipped.status();
    EXPECT_EQ(Show(*skipped), Show(c["text_skip"].get<std::string>())) << "ids " << c["ids"].dump();
  }
}

TEST_P(TokenizerGoldenTest, InvalidUtf8IsRejectedWithAClearError) {
  for (const json& hex : goldens_["invalid_utf8"]) {
    const std::string bytes = absl::HexStringToBytes(hex.get<std::string>());
    auto ids = tokenizer_->Encode(bytes);
    ASSERT_FALSE(ids.ok()) << "accepted " << Show(bytes);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(ids.status().message().find("invalid UTF-8 at byte"), std::string::npos)
        << ids.status();
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, TokenizerGoldenTest,
                         ::testing::Values("gpt2", "mistral", "qwen2", "llama3", "metaspace"));

}  // namespace
}  // namespace moe::text
