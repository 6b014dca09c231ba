// Stop conditions and the held-back text around stop strings.
#include "runtime/engine/stop_checker.h"

#include "gtest/gtest.h"
#include "tests/engine_test_util.h"

namespace moe {
namespace {

std::unique_ptr<TextStream> Pieces(std::vector<std::string> pieces) {
  return std::make_unique<testing::PieceTextStream>(std::move(pieces));
}

TEST(StopCheckerTest, StopStringSplitAcrossTokensIsFoundAndNeverStreamed) {
  StoppingParams params{.max_tokens = 100, .stop_strings = {"</end>"}};
  // Tokens 0..4 read "Hello", " wor", "ld</", "en", "d> tail".
  StopChecker stop(params, {}, Pieces({"Hello", " wor", "ld</", "en", "d> tail"}));
  std::string streamed;
  for (int32_t t = 0; t < 5; ++t) {
    StopChecker::Step s = stop.Append(t, t + 1);
    streamed += s.text;
    EXPECT_EQ(streamed.find('<'), std::string::npos) << "stop string leaked at token " << t;
    if (t < 4) {
      EXPECT_FALSE(s.finish.has_value());
    } else {
      ASSERT_TRUE(s.finish.has_value());
      EXPECT_EQ(*s.finish, FinishReason::kStopString);
      EXPECT_EQ(s.matched_stop, "</end>");
    }
  }
  EXPECT_EQ(streamed, "Hello world");
}

TEST(StopCheckerTest, IncludeStopStringKeepsIt) {
  StoppingParams params{.max_tokens = 100, .stop_strings = {"ab"}, .include_stop_string = true};
  StopChecker stop(params, {}, Pieces({"xa", "by"}));
  std::string streamed = stop.Append(0, 1).text;
  const StopChecker::Step s = stop.Append(1, 2);
  EXPECT_EQ(streamed + s.text, "xab");
}

TEST(StopCheckerTest, HeldBackTextIsReleasedAtLengthAndNeverSplitsUtf8) {
  StoppingParams params{.max_tokens = 3, .stop_strings = {"zzzz"}};
  // "é" is two bytes, "€" three: the hold-back cut must fall between characters.
  StopChecker stop(params, {}, Pieces({"aé", "€", "bz"}));
  std::string streamed;
  for (int32_t t = 0; t < 3; ++t) {
    const StopChecker::Step s = stop.Append(t, t + 1);
    for (size_t i = 0; i < s.text.size(); ++i) {
      if (i == 0) EXPECT_NE(static_cast<unsigned char>(s.text[0]) & 0xC0, 0x80) << "delta starts mid-character";
    }
    streamed += s.text;
    if (t == 2) EXPECT_EQ(*s.finish, FinishReason::kLength);
  }
  EXPECT_EQ(streamed, "aé€bz");
}

TEST(StopCheckerTest, EosStopTokensAndMinTokens) {
  StoppingParams params{.max_tokens = 10, .min_tokens = 2, .stop_token_ids = {5}};
  StopChecker stop(params, /*eos_ids=*/{9}, nullptr);
  EXPECT_EQ(stop.MaskedTokens(0), (std::vector<int32_t>{5, 9}));
  EXPECT_FALSE(stop.Append(9, 1).finish.has_value());  // EOS before min_tokens is ignored
  EXPECT_TRUE(stop.MaskedTokens(2).empty());
  EXPECT_EQ(*stop.Append(5, 2).finish, FinishReason::kStopToken);

  StopChecker eos(params, {9}, nullptr);
  eos.Append(1, 1);
  EXPECT_EQ(*eos.Append(9, 2).finish, FinishReason::kEos);

  StoppingParams ignore{.max_tokens = 3, .ignore_eos = true};
  StopChecker ignoring(ignore, {9}, nullptr);
  EXPECT_FALSE(ignoring.Append(9, 1).finish.has_value());
  EXPECT_TRUE(ignoring.MaskedTokens(0).empty());
}

}  // namespace
}  // namespace moe
