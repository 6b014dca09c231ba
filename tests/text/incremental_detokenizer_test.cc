// IncrementalDetokenizer: streamed deltas are whole UTF-8 characters and add up to Decode().
#include "runtime/text/incremental_detokenizer.h"

#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"
#include "runtime/text/utf8.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

std::string DataDir() { return std::string(MOE_TEXT_TEST_DATA_DIR) + "/tokenizers/"; }

class DetokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::FromDirectory(DataDir() + GetParam());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(tok).value();
    auto text = ReadTextFile(DataDir() + GetParam() + "/goldens.json");
    ASSERT_TRUE(text.ok()) << text.status();
    goldens_ = json::parse(*text);
  }

  // Streams `generated` after `prompt`; returns the concatenated deltas, checking each one.
  std::string Stream(const std::vector<int32_t>& prompt, const std::vector<int32_t>& generated,
                     DecodeOptions options) {
    IncrementalDetokenizer detok(*tokenizer_, prompt, options);
    std::string out;
    for (int32_t id : generated) {
      auto delta = detok.Step(id);
      EXPECT_TRUE(delta.ok()) << delta.status();
      EXPECT_TRUE(ValidateUtf8(delta.value_or("")).ok()) << absl::CEscape(*delta);
      out += delta.value_or("");
    }
    auto rest = detok.Finish();
    EXPECT_TRUE(rest.ok()) << rest.status();
    return out + rest.value_or("");
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  json goldens_;
};

TEST_P(DetokenizerTest, DeltasAddUpToDecodeWithoutPrompt) {
  for (bool skip : {false, true}) {
    for (const json& c : goldens_["encode"]) {
      const auto ids = c["ids"].get<std::vector<int32_t>>();
      auto full = tokenizer_->Decode(ids, {.skip_special_tokens = skip});
      ASSERT_TRUE(full.ok());
      EXPECT_EQ(absl::CEscape(Stream({}, ids, {.skip_special_tokens = skip})), absl::CEscape(*full))
          << "text " << absl::CEscape(c["text"].get<std::string>());
    }
  }
}

TEST_P(DetokenizerTest, DeltasAfterAPromptContinueItsText) {
  int checked = 0;
  for (const json& c : goldens_["encode"]) {
    const auto ids = c["ids_plain"].get<std::vector<int32_t>>();
    if (ids.size() < 2) continue;
    const std::vector<int32_t> prompt(ids.begin(), ids.begin() + ids.size() / 2);
    const std::vector<int32_t> generated(ids.begin() + ids.size() / 2, ids.end());
    auto full = tokenizer_->Decode(ids);
    auto head = tokenizer_->Decode(prompt);
    ASSERT_TRUE(full.ok() && head.ok());
    // Only where the prompt's text is a clean prefix (not ending inside a character).
    if (full->compare(0, head->size(), *head) != 0 || EndsWithIncompleteChar(*head)) continue;
    if (head->size() >= 3 && head->compare(head->size() - 3, 3, kReplacementChar) == 0) continue;
    EXPECT_EQ(absl::CEscape(Stream(prompt, generated, {})),
              absl::CEscape(full->substr(head->size())))
        << "text " << absl::CEscape(c["text"].get<std::string>());
    ++checked;
  }
  EXPECT_GT(checked, 80);
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, DetokenizerTest,
                         ::testing::Values("gpt2", "mistral", "qwen2", "llama3", "metaspace"));

TEST(DetokenizerGpt2Test, HoldsBackAnEmojiUntilItsLastByte) {
  auto tok = Tokenizer::FromDirectory(DataDir() + "gpt2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("a😀");  // 'a', then the emoji's 4 bytes in 2 tokens
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 3u);
  IncrementalDetokenizer detok(**tok, {});
  EXPECT_EQ(detok.Step((*ids)[0]).value(), "a");
  EXPECT_EQ(detok.Step((*ids)[1]).value(), "");  // first bytes of the emoji: held back
  EXPECT_EQ(detok.Step((*ids)[2]).value(), "😀");
  EXPECT_EQ(detok.Finish().value(), "");
}

TEST(DetokenizerGpt2Test, FinishFlushesAnUnfinishedCharacterAsReplacement) {
  auto tok = Tokenizer::FromDirectory(DataDir() + "gpt2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->Encode("😀");
  ASSERT_TRUE(ids.ok());
  IncrementalDetokenizer detok(**tok, {});
  EXPECT_EQ(detok.Step((*ids)[0]).value(), "");
  EXPECT_EQ(detok.Finish().value(), std::string(kReplacementChar));
}

TEST(DetokenizerMistralTest, KeepsTheSpaceBeforeAWordAfterThePrompt) {
  auto tok = Tokenizer::FromDirectory(DataDir() + "mistral");
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto prompt = (*tok)->Encode("Hello");
  auto more = (*tok)->Encode(" world", {.add_special_tokens = false});
  ASSERT_TRUE(prompt.ok() && more.ok());
  // " world" alone is ["▁", "▁world"]; the last one is what a model would generate.
  IncrementalDetokenizer detok(**tok, *prompt);
  EXPECT_EQ(detok.Step(more->back()).value(), " world");
}

TEST(DetokenizerGpt2Test, ALongRunOfSkippedTokensDoesNotGrowTheWindow) {
  auto tok = Tokenizer::FromDirectory(DataDir() + "gpt2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::optional<int32_t> eot = (*tok)->TokenToId("<|endoftext|>");
  auto word = (*tok)->Encode(" hello", {.add_special_tokens = false});
  ASSERT_TRUE(eot.has_value() && word.ok());
  IncrementalDetokenizer detok(**tok, {}, {.skip_special_tokens = true});
  for (int i = 0; i < 200; ++i) EXPECT_EQ(detok.Step(*eot).value(), "");
  EXPECT_LE(detok.ids().size() - detok.prefix_offset(), 2 * (IncrementalDetokenizer::kMaxUnreleasedIds + 1));
  std::string text;
  for (int32_t id : *word) text += detok.Step(id).value();
  EXPECT_EQ(text, " hello");
}

TEST(DetokenizerGpt2Test, ReportsAnUnknownId) {
  auto tok = Tokenizer::FromDirectory(DataDir() + "gpt2");
  ASSERT_TRUE(tok.ok()) << tok.status();
  IncrementalDetokenizer detok(**tok, {});
  auto delta = detok.Step(999999);
  ASSERT_FALSE(delta.ok());
  EXPECT_NE(delta.status().message().find("999999"), std::string::npos) << delta.status();
}

}  // namespace
}  // namespace moe::text
