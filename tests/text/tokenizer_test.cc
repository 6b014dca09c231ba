// Tokenizer loading errors, tokenizer_config.json handling, UTF-8 helpers and thread safety.
#include "runtime/text/tokenizer.h"

#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/text/regex.h"
#include "runtime/text/utf8.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

std::string Dir(const std::string& name) {
  return std::string(MOE_TEXT_TEST_DATA_DIR) + "/tokenizers/" + name;
}

json LoadTokenizerJson(const std::string& name) {
  auto text = ReadTextFile(Dir(name) + "/tokenizer.json");
  EXPECT_TRUE(text.ok()) << text.status();
  return json::parse(text.value_or("{}"));
}

TEST(TokenizerTest, MissingDirectoryIsNotFoundNamingThePath) {
  auto tok = Tokenizer::FromDirectory("/nonexistent/model");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find("/nonexistent/model/tokenizer.json"), std::string::npos);
}

TEST(TokenizerTest, UnsupportedPipelinePiecesFailToLoadByName) {
  json spec = LoadTokenizerJson("metaspace");
  spec["normalizer"] = {{"type", "Lowercase"}};
  auto tok = Tokenizer::FromJson(spec, {});
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("unsupported normalizer type 'Lowercase'"),
            std::string::npos)
      << tok.status();
  spec = LoadTokenizerJson("metaspace");
  spec["model"]["type"] = "Unigram";
  tok = Tokenizer::FromJson(spec, {});
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("'Unigram'"), std::string::npos) << tok.status();
}

TEST(TokenizerTest, ConfigAddBosAndEosOverrideThePostProcessor) {
  const json spec = LoadTokenizerJson("mistral");
  auto config = TokenizerConfig::FromJson(
      {{"bos_token", "<s>"}, {"eos_token", {{"content", "</s>"}}}, {"add_eos_token", true}});
  ASSERT_TRUE(config.ok()) << config.status();
  auto tok = Tokenizer::FromJson(spec, *config);
  ASSERT_TRUE(tok.ok()) << tok.status();
  // add_bos_token is absent: BOS stays as tokenizer.json's template has it.
  auto ids = (*tok)->Encode("Hello");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{1, 22557, 2}));
  auto no_bos = TokenizerConfig::FromJson({{"bos_token", "<s>"}, {"add_bos_token", false}});
  ASSERT_TRUE(no_bos.ok());
  auto plain = Tokenizer::FromJson(spec, *no_bos);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ((*plain)->Encode("Hello").value(), (std::vector<int32_t>{22557}));
  EXPECT_EQ((*tok)->eos_id(), 2);
  auto bad = TokenizerConfig::FromJson({{"eos_token", "<nope>"}});
  ASSERT_TRUE(bad.ok());
  auto bad_tok = Tokenizer::FromJson(spec, *bad);
  ASSERT_FALSE(bad_tok.ok());
  EXPECT_NE(bad_tok.status().message().find("eos_token '<nope>'"), std::string::npos);
}

TEST(TokenizerTest, DecodeRejectsUnknownIds) {
  auto tok = Tokenizer::FromDirectory(Dir("llama3"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto text = (*tok)->Decode({1, (*tok)->vocab_size()});
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("is not in the vocabulary"), std::string::npos);
}

TEST(TokenizerTest, EncodeIsThreadSafe) {
  auto tok = Tokenizer::FromDirectory(Dir("qwen2"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::string text = "Hello wörld, 你好 😀 1234567 <|im_start|>user\n";
  const std::vector<int32_t> expected = (*tok)->Encode(text).value();
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) mismatches[t] += (*tok)->Encode(text).value() != expected;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// Expected strings are what tokenizers 0.23.3's decoders give for the same input.
TEST(DecoderTest, StepsMatchTokenizers) {
  auto decode = [](const json& spec, std::vector<std::string> tokens) {
    auto decoder = MakeDecoder(spec);
    EXPECT_TRUE(decoder.ok()) << decoder.status();
    return DecodeTokens(decoder.value().get(), std::move(tokens));
  };
  // Metaspace drops every replacement in the first token when it prepends one.
  EXPECT_EQ(decode({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}},
                   {"▁a▁b", "▁c"}),
            "ab c");
  EXPECT_EQ(decode({{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "never"}},
                   {"▁a▁b", "▁c"}),
            " a b c");
  EXPECT_EQ(
      decode({{"type", "Strip"}, {"content", " "}, {"start", 2}, {"stop", 1}}, {"  x  ", " y "}),
      "x y");
  EXPECT_EQ(
      decode({{"type", "ByteFallback"}}, {"<0xE4>", "<0xB8>", "a", "<0xE4>", "<0xB8>", "<0xAD>"}),
      "\xEF\xBF\xBD\xEF\xBF\xBD"
      "a中");
  EXPECT_FALSE(MakeDecoder({{"type", "WordPiece"}}).ok());
}

TEST(Utf8Test, ValidateNamesTheFirstBadByte) {
  EXPECT_TRUE(ValidateUtf8("plain ascii, é, 😀").ok());
  EXPECT_EQ(ValidateUtf8("ab\xFF").message(),
            "invalid UTF-8 at byte 2 (0xff); text must be valid UTF-8");
  EXPECT_EQ(ValidateUtf8("\xE4\xB8").message(),
            "invalid UTF-8 at byte 2 (end of text inside a multi-byte character); text must be "
            "valid UTF-8");
  EXPECT_FALSE(ValidateUtf8("\xED\xA0\x80").ok());      // surrogate
  EXPECT_FALSE(ValidateUtf8("\xC0\xAF").ok());          // overlong
  EXPECT_FALSE(ValidateUtf8("\xF4\x90\x80\x80").ok());  // past U+10FFFF
}

TEST(Utf8Test, LossyReplacesEachMaximalBadSubpart) {
  const std::string r(kReplacementChar);
  EXPECT_EQ(Utf8Lossy("a\xFF"
                      "b"),
            "a" + r + "b");
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"), r);          // one truncated sequence
  EXPECT_EQ(Utf8Lossy("\xC0\xAF"), r + r);          // C0 can never start a sequence
  EXPECT_EQ(Utf8Lossy("\xED\xA0\x80"), r + r + r);  // surrogates: each byte alone
  EXPECT_EQ(Utf8Lossy("\xE4\xB8\xE4\xB8\xAD"), r + "\xE4\xB8\xAD");
  EXPECT_TRUE(EndsWithIncompleteChar("ok\xF0\x9F"));
  EXPECT_FALSE(EndsWithIncompleteChar("ok\xF0\x9F\x98\x80"));
}

TEST(RegexTest, WhiteSpaceMatchesOnigurumaIncludingNel) {
  EXPECT_EQ(OnigurumaCompatiblePattern(R"(\s+(?!\S)|[^\s\p{L}]+)"),
            R"([\s\x{85}]+(?![^\s\x{85}])|[^\s\x{85}\p{L}]+)");
  auto re = Regex::Compile(R"(\s+)");
  ASSERT_TRUE(re.ok());
  std::vector<std::pair<size_t, size_t>> matches;
  ASSERT_TRUE(
      (*re)
          ->ForEachMatch("a\xC2\x85 b", [&](size_t b, size_t e) { matches.emplace_back(b, e); })
          .ok());
  EXPECT_EQ(matches, (std::vector<std::pair<size_t, size_t>>{{1, 4}}));
  EXPECT_FALSE(Regex::Compile("(unclosed").ok());
}

}  // namespace
}  // namespace moe::text
