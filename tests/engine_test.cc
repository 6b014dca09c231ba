// The engine end to end on the CPU backend with a small random model: batch invariance
// under chunked prefill and preemption, the prefix cache, seeded sampling, n > 1, aborts,
// time limits, stop strings, validation, threads, a failed step, and every block back in the
// pool.
#include "runtime/engine/engine.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <random>
#include <thread>

#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "moe/moe_model.h"
#include "tests/engine_test_util.h"
#include "tests/test_util.h"
#include "tools/random_model.h"

namespace moe {
namespace {

using ::testing::HasSubstr;
using testing::RecordingSink;

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = std::filesystem::path(::testing::TempDir()) /
                            ("moe_engine_test." + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    nlohmann::json config = testing::TinyQwen3Config();
    config["max_position_embeddings"] = 128;
    ASSERT_TRUE(WriteRandomModel(config, {.dtype = DType::kBF16, .seed = 5, .init_std = 0.2f}, dir).ok());
    auto model = MoeModel::Load(dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = model->release();
    std::filesystem::remove_all(dir);
  }
  static void TearDownTestSuite() { delete model_; }

  // Every block back in the pool and nothing left running, whatever the test did.
  static void ExpectDrained(Engine& engine) {
    const EngineStats stats = engine.GetStats();
    EXPECT_EQ(stats.running, 0);
    EXPECT_EQ(stats.waiting, 0);
    EXPECT_EQ(stats.free_blocks, stats.total_blocks);
  }

  static std::unique_ptr<Engine> NewEngine(EngineOptions options) {
    auto engine = Engine::Create(*model_, std::move(options));
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }

  static Request Greedy(const std::string& id, std::vector<int32_t> prompt, int max_tokens) {
    Request r{.id = id, .prompt = std::move(prompt)};
    r.sampling.temperature = 0.0f;
    r.stopping.max_tokens = max_tokens;
    r.stopping.ignore_eos = true;
    return r;
  }

  static std::vector<int32_t> RandomPrompt(std::mt19937& rng, int len) {
    std::vector<int32_t> p(len);
    for (int32_t& t : p) t = std::uniform_int_distribution<int>(0, 126)(rng);
    return p;
  }

  static MoeModel* model_;
};
MoeModel* EngineTest::model_ = nullptr;

TEST_F(EngineTest, EachRequestIsTheSameAloneOrAmong32WithChunkingAndPreemption) {
  std::mt19937 rng(1);
  std::vector<Request> requests;
  for (int i = 0; i < 32; ++i) {
    requests.push_back(Greedy("r" + std::to_string(i), RandomPrompt(rng, 1 + (i * 7) % 40), 4 + i % 13));
  }
  std::vector<std::vector<int32_t>> alone;
  for (const Request& r : requests) {
    auto engine_owner = NewEngine({.num_kv_blocks = 64, .block_size = 4});
  Engine& engine = *engine_owner;
    auto sink = std::make_shared<RecordingSink>();
    ASSERT_TRUE(engine.Submit(r, sink).ok());
    ASSERT_TRUE(engine.RunUntilIdle().ok());
    alone.push_back(sink->choice().tokens);
    ASSERT_EQ(static_cast<int>(alone.back().size()), r.stopping.max_tokens);
  }
  // A token budget of 16 forces chunked prefill; 20 blocks of 4 force preemption.
  auto engine_owner = NewEngine({.num_kv_blocks = 20, .block_size = 4, .scheduler = {.max_num_batched_tokens = 16}});
  Engine& engine = *engine_owner;
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  for (const Request& r : requests) {
    sinks.push_back(std::make_shared<RecordingSink>());
    ASSERT_TRUE(engine.Submit(r, sinks.back()).ok());
  }
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(sinks[i]->choice().tokens, alone[i]) << requests[i].id;
    EXPECT_EQ(sinks[i]->choice().final->reason, FinishReason::kLength);
  }
  EXPECT_GT(engine.GetStats().preemptions, 0) << "the pool was meant to be too small";
  ExpectDrained(engine);
}

TEST_F(EngineTest, SharedThreeBlockPrefixIsCachedAndGivesTheSameOutput) {
  std::mt19937 rng(2);
  const std::vector<int32_t> prefix = RandomPrompt(rng, 12);  // 3 blocks of 4
  std::vector<int32_t> first = prefix, second = prefix;
  first.insert(first.end(), {5, 6});
  second.insert(second.end(), {7, 8, 9});

  auto fresh_owner = NewEngine({.num_kv_blocks = 32, .block_size = 4});
  Engine& fresh = *fresh_owner;
  auto expected = std::make_shared<RecordingSink>();
  ASSERT_TRUE(fresh.Submit(Greedy("b", second, 8), expected).ok());
  ASSERT_TRUE(fresh.RunUntilIdle().ok());
  EXPECT_EQ(expected->choice().final->usage.cached_tokens, 0);

  auto engine_owner = NewEngine({.num_kv_blocks = 32, .block_size = 4});
  Engine& engine = *engine_owner;
  auto a = std::make_shared<RecordingSink>(), b = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine.Submit(Greedy("a", first, 8), a).ok());
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  ASSERT_TRUE(engine.Submit(Greedy("b", second, 8), b).ok());
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  EXPECT_EQ(b->choice().final->usage.cached_tokens, 12);
  EXPECT_EQ(b->choice().final->usage.prompt_tokens, 15);
  EXPECT_EQ(engine.GetStats().prefix_cache.queried_tokens, 14 + 15);
  EXPECT_EQ(engine.GetStats().prefix_cache.hit_tokens, 12);
  EXPECT_EQ(b->choice().tokens, expected->choice().tokens);
  ExpectDrained(engine);
}

TEST_F(EngineTest, SeededSamplingIsReproducibleInAnyBatch) {
  std::mt19937 rng(3);
  Request seeded{.id = "seeded", .prompt = RandomPrompt(rng, 9)};
  seeded.sampling = {.temperature = 0.9f, .top_k = 20, .top_p = 0.95f, .seed = 1234, .logprobs = 2};
  seeded.stopping = {.max_tokens = 12, .ignore_eos = true};

  auto alone_owner = NewEngine({.num_kv_blocks = 64, .block_size = 4});
  Engine& alone = *alone_owner;
  auto solo = std::make_shared<RecordingSink>();
  ASSERT_TRUE(alone.Submit(seeded, solo).ok());
  ASSERT_TRUE(alone.RunUntilIdle().ok());

  auto crowded_owner = NewEngine({.num_kv_blocks = 64, .block_size = 4, .scheduler = {.max_num_batched_tokens = 8}});
  Engine& crowded = *crowded_owner;
  std::vector<std::shared_ptr<RecordingSink>> others;
  for (int i = 0; i < 6; ++i) {
    Request r{.id = "other" + std::to_string(i), .prompt = RandomPrompt(rng, 3 + i)};
    r.sampling.temperature = 1.0f;
    r.stopping.max_tokens = 5 + i;
    others.push_back(std::make_shared<RecordingSink>());
    ASSERT_TRUE(crowded.Submit(r, others.back()).ok());
  }
  auto crowd = std::make_shared<RecordingSink>();
  ASSERT_TRUE(crowded.Submit(seeded, crowd).ok());
  ASSERT_TRUE(crowded.RunUntilIdle().ok());
  EXPECT_EQ(crowd->choice().tokens, solo->choice().tokens);
  ASSERT_EQ(crowd->choice().logprobs.size(), 12u);
  EXPECT_EQ(crowd->choice().logprobs[3].top.size(), 2u);
  EXPECT_EQ(crowd->choice().logprobs[3].chosen.logprob, solo->choice().logprobs[3].chosen.logprob);
  ExpectDrained(crowded);
}

TEST_F(EngineTest, ChoicesShareThePromptBlocks) {
  std::mt19937 rng(4);
  Request r{.id = "n3", .prompt = RandomPrompt(rng, 10)};
  r.sampling = {.temperature = 1.0f, .seed = 99, .n = 3};
  r.stopping = {.max_tokens = 10, .ignore_eos = true};
  auto engine_owner = NewEngine({.num_kv_blocks = 32, .block_size = 4});
  Engine& engine = *engine_owner;
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine.Submit(r, sink).ok());
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  EXPECT_EQ(sink->num_finals(), 3);
  EXPECT_EQ(sink->choice(0).final->usage.cached_tokens, 0);
  EXPECT_EQ(sink->choice(1).final->usage.cached_tokens, 8);  // 2 full blocks of the prompt
  EXPECT_EQ(sink->choice(2).final->usage.cached_tokens, 8);
  EXPECT_NE(sink->choice(0).tokens, sink->choice(1).tokens);
  ExpectDrained(engine);
}

TEST_F(EngineTest, StopStringsStopAndNeverStream) {
  // Token t reads as one letter; the stop string spans three tokens.
  std::vector<std::string> letters;
  for (int i = 0; i < 128; ++i) letters.push_back(std::string(1, static_cast<char>('a' + i % 26)));
  EngineOptions options{.num_kv_blocks = 32, .block_size = 4};
  options.text_streams = [letters](const Request&) {
    return std::make_unique<testing::PieceTextStream>(letters);
  };
  auto probe_owner = NewEngine(options);
  Engine& probe = *probe_owner;
  auto free_run = std::make_shared<RecordingSink>();
  ASSERT_TRUE(probe.Submit(Greedy("free", {1, 2, 3}, 12), free_run).ok());
  ASSERT_TRUE(probe.RunUntilIdle().ok());
  const std::string text = free_run->choice().text;
  ASSERT_EQ(text.size(), 12u);

  Request r = Greedy("stop", {1, 2, 3}, 12);
  r.stopping.stop_strings = {text.substr(5, 3), "not-there"};
  auto engine_owner = NewEngine(options);
  Engine& engine = *engine_owner;
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine.Submit(r, sink).ok());
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  const auto choice = sink->choice();
  EXPECT_EQ(choice.final->reason, FinishReason::kStopString);
  EXPECT_EQ(choice.final->matched_stop, text.substr(5, 3));
  EXPECT_EQ(choice.text, text.substr(0, text.find(text.substr(5, 3))));
  ExpectDrained(engine);
}

TEST_F(EngineTest, RejectsBadRequestsWithClearErrors) {
  auto engine_owner = NewEngine({.num_kv_blocks = 8, .block_size = 4});
  Engine& engine = *engine_owner;
  auto sink = std::make_shared<RecordingSink>();
  auto error = [&](Request r) { return std::string(engine.Submit(std::move(r), sink).message()); };
  EXPECT_THAT(error(Greedy("a", {}, 4)), HasSubstr("prompt is empty"));
  EXPECT_THAT(error(Greedy("a", {1, 500}, 4)), HasSubstr("prompt[1] = 500 is outside the vocabulary (size 128)"));
  EXPECT_THAT(error(Greedy("a", std::vector<int32_t>(128, 1), 4)), HasSubstr("the context holds 128"));
  EXPECT_THAT(error(Greedy("a", {1}, 0)), HasSubstr("max_tokens must be >= 1"));
  EXPECT_THAT(error(Greedy("a", std::vector<int32_t>(30, 1), 10)),
              HasSubstr("needs 10 KV blocks, the pool has 8: max_tokens can be at most 2"));
  Request many_stops = Greedy("a", {1}, 4);
  many_stops.stopping.stop_token_ids.assign(5000, 3);
  EXPECT_THAT(error(many_stops), HasSubstr("stop_token_ids has 5000 entries, at most 1024"));
  Request r = Greedy("a", {1}, 4);
  r.sampling.temperature = -1;
  EXPECT_THAT(error(r), HasSubstr("temperature must be finite and >= 0"));
  r = Greedy("a", {1}, 4);
  r.sampling.temperature = 1;
  r.sampling.logit_bias = {{3, std::numeric_limits<float>::infinity()}};
  EXPECT_THAT(error(r), HasSubstr("logit_bias[3] = inf, expected within +-100"));
  r.sampling.logit_bias = {};
  r.sampling.presence_penalty = std::nanf("");
  EXPECT_THAT(error(r), HasSubstr("presence_penalty must be finite"));
  r = Greedy("a", {1}, 4);
  r.stopping.min_tokens = 5;
  EXPECT_THAT(error(r), HasSubstr("min_tokens must be in [0, max_tokens = 4], got 5"));
  r = Greedy("a", {1}, 4);
  r.cache_salt.assign(300, 's');
  EXPECT_THAT(error(r), HasSubstr("cache_salt has 300 bytes, at most 256"));
  r = Greedy("", {1}, 4);
  EXPECT_THAT(error(r), HasSubstr("request id is empty"));
  r = Greedy("a", {1}, 4);
  r.sampling.n = 100000;
  EXPECT_THAT(error(r), HasSubstr("n must be in [1, 128]"));
  r = Greedy("a", {1}, 4);
  r.sampling.top_p = 0;
  EXPECT_THAT(error(r), HasSubstr("top_p must be in (0, 1]"));
  r = Greedy("a", {1}, 4);
  r.stopping.stop_strings = {"x"};
  EXPECT_THAT(error(r), HasSubstr("stop needs a tokenizer"));
  ASSERT_TRUE(engine.Submit(Greedy("dup", {1}, 4), sink).ok());
  EXPECT_THAT(error(Greedy("dup", {1}, 4)), HasSubstr("already running"));
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  EXPECT_EQ(sink->num_finals(), 1);
  ExpectDrained(engine);
}

TEST_F(EngineTest, SizesThePoolFromAMemoryBudgetAndBoundsTheQueue) {
  // Tiny Qwen3: 2 layers x 2 KV heads x 32 dims, K and V in f32: 1 KiB per token.
  EXPECT_EQ(KvBlocksForBudget(model_->info(), 4, 64 * 1024), 16);
  auto engine_owner = NewEngine({.kv_cache_bytes = 64 * 1024, .block_size = 4, .max_waiting_requests = 2});
  Engine& engine = *engine_owner;
  EXPECT_EQ(engine.GetStats().total_blocks, 16);
  auto a = std::make_shared<RecordingSink>(), b = std::make_shared<RecordingSink>(),
       c = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine.Submit(Greedy("a", {1}, 2), a).ok());
  ASSERT_TRUE(engine.Submit(Greedy("b", {1}, 2), b).ok());
  EXPECT_EQ(engine.Submit(Greedy("c", {1}, 2), c).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  EXPECT_EQ(engine.GetStats().total_blocks, 16);
  EXPECT_TRUE(engine.Submit(Greedy("c", {1}, 2), c).ok());
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  EXPECT_EQ(a->num_finals() + b->num_finals() + c->num_finals(), 3);
  ExpectDrained(engine);
}

TEST_F(EngineTest, RejectsBadOptionsAndRequestsAfterStop) {
  EXPECT_THAT(std::string(Engine::Create(*model_, {.block_size = 24}).status().message()),
              HasSubstr("block size must be a power of two"));
  EXPECT_THAT(std::string(Engine::Create(*model_, {.kv_cache_bytes = 100}).status().message()),
              HasSubstr("holds no block"));
  EXPECT_FALSE(Engine::Create(*model_, {.scheduler = {.max_num_batched_tokens = 0}}).ok());
  auto engine = NewEngine({.num_kv_blocks = 8, .block_size = 4});
  engine->Start();
  engine->Stop();
  auto sink = std::make_shared<RecordingSink>();
  EXPECT_EQ(engine->Submit(Greedy("late", {1}, 2), sink).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(engine->Abort("never-submitted"));  // harmless
  ExpectDrained(*engine);
}

TEST_F(EngineTest, TimeLimitEndsARequest) {
  auto engine_owner = NewEngine({.num_kv_blocks = 32, .block_size = 4});
  Engine& engine = *engine_owner;
  Request r = Greedy("slow", {1, 2}, 20);
  r.stopping.time_limit = absl::ZeroDuration();
  auto sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine.Submit(r, sink).ok());
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  EXPECT_EQ(sink->choice().final->reason, FinishReason::kTimeLimit);
  ExpectDrained(engine);
}

TEST_F(EngineTest, TimeLimitsAndTimingsCountFromSubmit) {
  // Time spent in the inbox (while the engine thread runs a long step) counts.
  auto engine = NewEngine({.num_kv_blocks = 32, .block_size = 4});
  Request limited = Greedy("limited", {1, 2, 3}, 3);
  limited.stopping.time_limit = absl::Milliseconds(100);
  auto limited_sink = std::make_shared<RecordingSink>();
  auto timed_sink = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(limited, limited_sink).ok());
  ASSERT_TRUE(engine->Submit(Greedy("timed", {4, 5}, 3), timed_sink).ok());
  absl::SleepFor(absl::Milliseconds(250));
  ASSERT_TRUE(engine->RunUntilIdle().ok());
  EXPECT_EQ(limited_sink->choice().final->reason, FinishReason::kTimeLimit);
  EXPECT_GE(limited_sink->choice().final->timings.queue, absl::Milliseconds(250))
      << "never scheduled: all of its time was queue time";
  const FinalOutput timed = *timed_sink->choice().final;  // choice() is a copy
  EXPECT_EQ(timed.reason, FinishReason::kLength);
  EXPECT_GE(timed.timings.queue, absl::Milliseconds(250));
  EXPECT_GE(timed.timings.time_to_first_token, absl::Milliseconds(250));
  EXPECT_GE(timed.timings.end_to_end, absl::Milliseconds(250));
  ExpectDrained(*engine);
}

TEST_F(EngineTest, AnAbortAimedAtAFinishedRequestSparesTheNextOneWithItsId) {
  auto engine = NewEngine({.num_kv_blocks = 16, .block_size = 4});
  // The abort is taken while "x" runs (from its own stream, mid-step), but "x" finishes in
  // that same step; the next step drains it after a new "x" was submitted.
  auto first = std::make_shared<RecordingSink>();
  first->on_delta = [&engine](const OutputDelta&) { EXPECT_TRUE(engine->Abort("x")); };
  ASSERT_TRUE(engine->Submit(Greedy("x", {1, 2, 3}, 1), first).ok());
  ASSERT_TRUE(engine->Step().ok());
  ASSERT_TRUE(first->choice().final.has_value());
  EXPECT_EQ(first->choice().final->reason, FinishReason::kLength);
  EXPECT_FALSE(engine->Abort("x")) << "x has finished";

  auto second = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(Greedy("x", {4, 5, 6}, 3), second).ok());
  ASSERT_TRUE(engine->RunUntilIdle().ok());
  ASSERT_TRUE(second->choice().final.has_value());
  EXPECT_EQ(second->choice().final->reason, FinishReason::kLength);
  EXPECT_EQ(second->choice().tokens.size(), 3u);
  ExpectDrained(*engine);
}

TEST_F(EngineTest, PreemptionTakesTheLowestPriorityFirst) {
  // 12 blocks of 4 hold two 23-token sequences but not three: when the pool runs out, the
  // later-admitted priority-0 request must not be the one recomputed.
  auto engine = NewEngine({.num_kv_blocks = 12, .block_size = 4});
  std::vector<std::shared_ptr<RecordingSink>> low;
  for (int i = 0; i < 2; ++i) {
    Request r = Greedy("low" + std::to_string(i), std::vector<int32_t>(4, i + 1), 19);
    r.priority = 5;
    low.push_back(std::make_shared<RecordingSink>());
    ASSERT_TRUE(engine->Submit(r, low.back()).ok());
  }
  ASSERT_TRUE(engine->Step().ok());
  Request r = Greedy("high", std::vector<int32_t>(4, 9), 19);
  r.priority = 0;
  auto high = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine->Submit(r, high).ok());
  while (!high->choice().final.has_value()) ASSERT_TRUE(engine->Step().ok());
  EXPECT_GT(engine->GetStats().preemptions, 0) << "the pool was meant to run out";
  EXPECT_FALSE(low[0]->choice().final.has_value() && low[1]->choice().final.has_value())
      << "both low-priority requests finished before the high-priority one";
  ASSERT_TRUE(engine->RunUntilIdle().ok());
  for (const auto& sink : low) EXPECT_EQ(sink->choice().tokens.size(), 19u);
  EXPECT_EQ(high->choice().tokens.size(), 19u);
  ExpectDrained(*engine);
}

TEST_F(EngineTest, StressOf1000RequestsWithRandomAbortsReturnsEveryBlock) {
  std::mt19937 rng(5);
  auto engine_owner = NewEngine({.num_kv_blocks = 48, .block_size = 4,
                          .scheduler = {.max_num_batched_tokens = 64, .max_num_seqs = 24}});
  Engine& engine = *engine_owner;
  std::vector<std::shared_ptr<RecordingSink>> sinks;
  int expected_finals = 0;
  for (int i = 0; i < 1000; ++i) {
    Request r{.id = "s" + std::to_string(i), .prompt = RandomPrompt(rng, 1 + rng() % 24), .priority = static_cast<int>(rng() % 3)};
    r.sampling = {.temperature = (rng() % 2) ? 0.0f : 0.8f, .n = 1 + static_cast<int>(rng() % 3 == 0)};
    r.stopping.max_tokens = 1 + rng() % 12;
    r.stopping.ignore_eos = rng() % 2;
    auto sink = std::make_shared<RecordingSink>();
    const int abort_after = rng() % 4 == 0 ? static_cast<int>(rng() % 4) : -1;
    if (abort_after >= 0) {
      // Abort from inside the stream (the engine thread), after a few tokens.
      sink->on_delta = [&engine, id = r.id, abort_after, n = 0](const OutputDelta&) mutable {
        if (n++ == abort_after) engine.Abort(id);
      };
    }
    ASSERT_TRUE(engine.Submit(r, sink).ok());
    expected_finals += r.sampling.n;
    sinks.push_back(sink);
    if (rng() % 10 == 0) engine.Abort(r.id);  // abort before it even starts
    if (i % 50 == 49) {
      ASSERT_TRUE(engine.Step().ok());
    }
  }
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  int finals = 0, aborted = 0;
  for (const auto& sink : sinks) {
    finals += sink->num_finals();
    for (int c = 0; c < 3; ++c) {
      const auto choice = sink->choice(c);
      EXPECT_LE(choice.finals, 1);
      if (choice.final && choice.final->reason == FinishReason::kAborted) ++aborted;
    }
  }
  EXPECT_EQ(finals, expected_finals);
  EXPECT_GT(aborted, 50);
  EXPECT_GT(engine.GetStats().preemptions, 0);
  ExpectDrained(engine);
}

TEST_F(EngineTest, BackgroundThreadServesConcurrentSubmitters) {
  auto engine_owner = NewEngine({.num_kv_blocks = 64, .block_size = 4});
  Engine& engine = *engine_owner;
  engine.Start();
  std::vector<std::shared_ptr<RecordingSink>> sinks(16);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 4; ++i) {
        sinks[t * 4 + i] = std::make_shared<RecordingSink>();
        EXPECT_TRUE(engine.Submit(Greedy(absl::StrCat("t", t, "-", i), {t + 1, i + 1}, 6), sinks[t * 4 + i]).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  for (auto& sink : sinks) sink->WaitForFinals(1);
  engine.Stop();
  for (auto& sink : sinks) EXPECT_EQ(sink->choice().tokens.size(), 6u);
  ExpectDrained(engine);
}

// The model, with one step that fails: the forward pass number `fail_at` (from 0) returns
// an error, as a device fault or a failed collective would.
class OneFaultyStep final : public Model {
 public:
  OneFaultyStep(Model& model, int fail_at) : model_(model), fail_at_(fail_at) {}
  const ModelInfo& info() const override { return model_.info(); }
  absl::StatusOr<Tensor> Forward(const StepBatch& batch, KvCache& kv) override { return model_.Forward(batch, kv); }
  absl::StatusOr<StepSamples> ForwardAndSample(const StepBatch& batch, KvCache& kv,
                                               const SamplingBatch& sampling) override {
    if (steps_++ == fail_at_) return absl::InternalError("injected fault");
    return model_.ForwardAndSample(batch, kv, sampling);
  }

 private:
  Model& model_;
  const int fail_at_;
  int steps_ = 0;
};

TEST_F(EngineTest, AFailedStepEndsItsRequestsWithAnErrorAndTheEngineServesTheRest) {
  OneFaultyStep faulty(*model_, /*fail_at=*/2);
  auto created = Engine::Create(faulty, {.num_kv_blocks = 64, .block_size = 4});
  ASSERT_TRUE(created.ok()) << created.status();
  Engine& engine = **created;
  // In the failing step: a and b. Submitted after it: c, which runs to its end.
  auto a = std::make_shared<RecordingSink>(), b = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine.Submit(Greedy("a", {1, 2, 3}, 8), a).ok());
  ASSERT_TRUE(engine.Submit(Greedy("b", {4, 5}, 8), b).ok());
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(engine.Step().ok());
  const absl::StatusOr<bool> failed = engine.Step();
  EXPECT_THAT(failed.status().message(), HasSubstr("injected fault"));
  for (const auto& sink : {a, b}) {
    const RecordingSink::Choice c = sink->choice();
    ASSERT_TRUE(c.final.has_value());
    EXPECT_EQ(c.final->reason, FinishReason::kError);
    EXPECT_THAT(c.final->error.message(), HasSubstr("injected fault"));
    EXPECT_EQ(c.tokens.size(), 2u) << "the tokens of the steps before the fault are kept";
  }
  auto c = std::make_shared<RecordingSink>();
  ASSERT_TRUE(engine.Submit(Greedy("c", {1, 2, 3}, 8), c).ok());
  ASSERT_TRUE(engine.RunUntilIdle().ok());
  ASSERT_TRUE(c->choice().final.has_value());
  EXPECT_EQ(c->choice().final->reason, FinishReason::kLength);
  EXPECT_EQ(c->choice().tokens.size(), 8u);
  ExpectDrained(engine);
}

}  // namespace
}  // namespace moe
