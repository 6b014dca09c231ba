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
  // Holding back 1 byte of "aé" would cut inside "é" (2 bytes), of "€" inside the euro sign.
  StoppingParams params{.max_tokens = 3, .stop_strings = {"zz"}};
  StopChecker stop(params, {}, Pieces({"aé", "€", "bz"}));
  std::vector<std::string> deltas;
  for (int32_t t = 0; t < 3; ++t) {
    const StopChecker::Step s = stop.Append(t, t + 1);
    deltas.push_back(s.text);
    if (t == 2) EXPECT_EQ(*s.finish, FinishReason::kLength);
  }
  EXPECT_EQ(deltas, (std::vector<std::string>{"a", "é", "€bz"}));
}

TEST(StopCheckerTest, StopStringsWaitForMinTokens) {
  StoppingParams params{.max_tokens = 10, .min_tokens = 3, .stop_strings = {"b"}};
  StopChecker stop(params, {}, Pieces({"a", "b"}));
  EXPECT_FALSE(stop.Append(1, 1).finish.has_value());  // "b" before min_tokens: not a stop
  EXPECT_FALSE(stop.Append(0, 2).finish.has_value());
  const StopChecker::Step s = stop.Append(1, 3);
  EXPECT_EQ(*s.finish, FinishReason::kStopString);
}

TEST(StopCheckerTest, AStopStringSeenBeforeMinTokensNeverStopsLater) {
  // The longer stop string keeps text held back, so the early "\n" is still pending when
  // min_tokens is reached: only a stop string ending in the newest token's text may stop.
  StoppingParams params{.max_tokens = 10, .min_tokens = 2, .stop_strings = {"\n", "\n\nUser:"}};
  StopChecker stop(params, {}, Pieces({"\n", "Hi", " there", "\n"}));
  std::string streamed;
  for (int32_t t = 0; t < 3; ++t) {
    const StopChecker::Step s = stop.Append(t, t + 1);
    EXPECT_FALSE(s.finish.has_value()) << "token " << t << " stopped on \"" << s.matched_stop << "\"";
    streamed += s.text;
  }
  const StopChecker::Step s = stop.Append(3, 4);  // a new "\n", after min_tokens
  ASSERT_TRUE(s.finish.has_value());
  EXPECT_EQ(*s.finish, FinishReason::kStopString);
  EXPECT_EQ(streamed + s.text, "\nHi there");
}

TEST(StopCheckerTest, StopTokenTextIsNotStreamed) {
  StoppingParams params{.max_tokens = 10, .stop_token_ids = {1}};
  StopChecker stop(params, {}, Pieces({"a", "<|eot|>"}));
  std::string streamed = stop.Append(0, 1).text;
  const StopChecker::Step s = stop.Append(1, 2);
  EXPECT_EQ(*s.finish, FinishReason::kStopToken);
  EXPECT_EQ(s.matched_stop, "1");
  EXPECT_EQ(streamed + s.text, "a");
}

TEST(StopCheckerTest, LengthWinsOverEosOnTheLastToken) {
  StopChecker stop({.max_tokens = 2}, {9}, nullptr);
  stop.Append(1, 1);
  EXPECT_EQ(*stop.Append(9, 2).finish, FinishReason::kLength);
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
