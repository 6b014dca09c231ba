// The engine with a real tokenizer: streamed text deltas through the incremental
// detokenizer spell exactly the generated tokens, and a stop string in detokenized text
// ends the stream without any of it being sent.
#include <filesystem>

#include <unistd.h>

#include "gtest/gtest.h"
#include "moe/moe_model.h"
#include "runtime/engine/detokenizer_stream.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer.h"
#include "tests/engine_test_util.h"
#include "tests/test_util.h"
#include "tools/random_model.h"

namespace moe {
namespace {

using testing::RecordingSink;

class EngineTextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tokenizer = text::Tokenizer::FromDirectory(testing::DataDir() + "/tokenizers/qwen2");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
    const std::string dir = testing::ScratchDir("model");
    nlohmann::json config = testing::TinyQwen3Config();
    config["vocab_size"] = tokenizer_->vocab_size();
    ASSERT_TRUE(WriteRandomModel(config, {.dtype = DType::kBF16, .seed = 8, .init_std = 0.2f}, dir).ok());
    auto model = MoeModel::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    EngineOptions options{.num_kv_blocks = 64, .block_size = 4};
    options.text_streams = DetokenizerStreams(*tokenizer_);
    auto engine = Engine::Create(*model_, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  Request Greedy(const std::string& id, int max_tokens) {
    Request r{.id = id, .prompt = *tokenizer_->Encode("The quick brown fox jumps over the lazy dog.")};
    r.sampling.temperature = 0.0f;
    r.stopping = {.max_tokens = max_tokens, .ignore_eos = true};
    return r;
  }

  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<MoeModel> model_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTextTest, StreamedTextSpellsTheGeneratedTokens) {
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine_->Submit(Greedy("free", 24), sink).ok());
  ASSERT_TRUE(engine_->RunUntilIdle().ok());
  const auto choice = sink->choice();
  ASSERT_EQ(choice.tokens.size(), 24u);
  EXPECT_EQ(choice.text, *tokenizer_->Decode(choice.tokens, {.skip_special_tokens = true}));
  EXPECT_FALSE(choice.text.empty());
}

TEST_F(EngineTextTest, StopStringInDetokenizedTextIsNeverStreamed) {
  auto probe = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine_->Submit(Greedy("probe", 24), probe).ok());
  ASSERT_TRUE(engine_->RunUntilIdle().ok());
  const std::string text = probe->choice().text;
  ASSERT_GE(text.size(), 12u);
  // A stop string that starts inside one token's text and ends inside a later one's.
  const std::string stop = text.substr(text.size() / 2 - 2, 5);
  Request r = Greedy("stopped", 24);
  r.stopping.stop_strings = {stop};
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine_->Submit(r, sink).ok());
  ASSERT_TRUE(engine_->RunUntilIdle().ok());
  const auto choice = sink->choice();
  EXPECT_EQ(choice.final->reason, FinishReason::kStopString);
  EXPECT_EQ(choice.final->matched_stop, stop);
  EXPECT_EQ(choice.text, text.substr(0, text.find(stop)));
  EXPECT_LT(choice.tokens.size(), 24u);
  EXPECT_EQ(engine_->GetStats().free_blocks, engine_->GetStats().total_blocks);
}

}  // namespace
}  // namespace moe
