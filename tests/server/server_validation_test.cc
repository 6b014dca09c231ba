// moe-server end to end, bad input: each bad Generate parameter gets INVALID_ARGUMENT naming
// the field and the server keeps serving; a full waiting queue gives RESOURCE_EXHAUSTED;
// bad flags (an unbuilt backend, a missing model) stop the binary with a clear message.
#include <functional>
#include <limits>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "runtime/engine/request_validation.h"
#include "tests/server/server_process.h"
#include "tests/server/server_test_util.h"
#include "tests/test_util.h"

namespace moe::testing {
namespace {

using ::testing::HasSubstr;

struct BadCase {
  std::string name;
  std::function<void(v1::GenerateRequest&)> edit;
  std::string field;  // the message must name it
  grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT;
};

v1::GenerateRequest GoodRequest() {
  v1::GenerateRequest r;
  for (int32_t id : {1, 2, 3}) r.mutable_token_ids()->add_ids(id);
  r.mutable_stopping()->set_max_tokens(4);
  return r;
}

std::vector<BadCase> BadCases() {
  return {
      {"negative temperature", [](auto& r) { r.mutable_sampling()->set_temperature(-0.5f); },
       "sampling.temperature"},
      {"top_p zero", [](auto& r) { r.mutable_sampling()->set_top_p(0.0f); }, "sampling.top_p"},
      {"top_p above one", [](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }, "sampling.top_p"},
      {"negative top_k", [](auto& r) { r.mutable_sampling()->set_top_k(-1); }, "sampling.top_k"},
      {"min_p above one", [](auto& r) { r.mutable_sampling()->set_min_p(2.0f); }, "sampling.min_p"},
      {"zero repetition penalty",
       [](auto& r) { r.mutable_sampling()->set_repetition_penalty(0.0f); },
       "sampling.repetition_penalty"},
      {"zero choices", [](auto& r) { r.mutable_sampling()->set_n(0); }, "sampling.n"},
      {"logit bias outside the vocabulary",
       [](auto& r) { (*r.mutable_sampling()->mutable_logit_bias())[99999] = 1; },
       "sampling.logit_bias[99999]"},
      {"no input", [](auto& r) { r.clear_token_ids(); }, "input"},
      {"empty text", [](auto& r) { r.set_text(""); }, "input.text"},
      {"empty token ids", [](auto& r) { r.mutable_token_ids()->clear_ids(); }, "input.token_ids"},
      {"unknown token id", [](auto& r) { r.mutable_token_ids()->add_ids(99999); },
       "input.token_ids[3]"},
      {"negative token id", [](auto& r) { r.mutable_token_ids()->set_ids(0, -4); },
       "input.token_ids[0]"},
      {"prompt longer than the context",
       [](auto& r) {
         for (int i = 0; i < kServerModelContext; ++i) r.mutable_token_ids()->add_ids(i % 1000);
       },
       "context holds 512"},
      {"empty chat", [](auto& r) { r.mutable_chat(); }, "input.chat.messages"},
      {"chat message without role",
       [](auto& r) { r.mutable_chat()->add_messages()->set_content("hi"); },
       "input.chat.messages[0].role"},
      {"too many chat messages",
       [](auto& r) {
         for (int i = 0; i < kRequestCaps.max_chat_messages + 1; ++i) {
           auto* m = r.mutable_chat()->add_messages();
           m->set_role("user");
           m->set_content("hi");
         }
       },
       "input.chat has 4097 messages, at most 4096"},
      {"max_tokens zero", [](auto& r) { r.mutable_stopping()->set_max_tokens(0); },
       "stopping.max_tokens"},
      {"min_tokens above max_tokens", [](auto& r) { r.mutable_stopping()->set_min_tokens(10); },
       "stopping.min_tokens"},
      {"stop token outside the vocabulary",
       [](auto& r) { r.mutable_stopping()->add_stop_token_ids(5000); },
       "stopping.stop_token_ids[0]"},
      {"empty stop string", [](auto& r) { r.mutable_stopping()->add_stop(""); },
       "stopping.stop[0]"},
      {"too many stop strings",
       [](auto& r) {
         for (int i = 0; i < 17; ++i) r.mutable_stopping()->add_stop("s" + std::to_string(i));
       },
       "stopping.stop has 17 strings, at most 16"},
      {"stop string too long", [](auto& r) { r.mutable_stopping()->add_stop(std::string(300, 'x')); },
       "stopping.stop[0] must have 1 to 256 bytes"},
      {"presence penalty not finite",
       [](auto& r) { r.mutable_sampling()->set_presence_penalty(std::numeric_limits<float>::infinity()); },
       "sampling.presence_penalty must be finite"},
      {"too many top logprobs",
       [](auto& r) {
         r.mutable_output()->set_logprobs(true);
         r.mutable_output()->set_top_logprobs(21);
       },
       "output.top_logprobs"},
      {"top logprobs without logprobs", [](auto& r) { r.mutable_output()->set_top_logprobs(2); },
       "output.logprobs"},
      {"request id too long", [](auto& r) { r.set_request_id(std::string(300, 'x')); },
       "request_id"},
      {"cache salt too long", [](auto& r) { r.set_cache_salt(std::string(4'000'000, 's')); },
       "cache_salt"},
  };
}

TEST(ServerValidationTest, EachBadParameterIsRefusedByNameAndTheServerKeepsServing) {
  const std::string dir = MakeServerModel(ScratchDir("model"));
  auto server = ServerProcess::Start({"--model", dir, "--kv_blocks", "256"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Connect((*server)->address());
  for (const BadCase& bad : BadCases()) {
    v1::GenerateRequest request = GoodRequest();
    bad.edit(request);
    const Streamed s = StreamGenerate(*stub, request);
    EXPECT_EQ(s.status.error_code(), bad.code) << bad.name << ": " << s.status.error_message();
    EXPECT_THAT(s.status.error_message(), HasSubstr(bad.field)) << bad.name;
    EXPECT_TRUE(s.finals.empty() && s.chunks == 0) << bad.name << " streamed something";
  }
  const Streamed good = StreamGenerate(*stub, GoodRequest());
  ASSERT_TRUE(good.status.ok()) << good.status.error_message() << "\n" << (*server)->Log();
  EXPECT_EQ(good.tokens.at(0).size(), 4u);
  const std::string metrics = HttpGet((*server)->metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(metrics, "moe_requests_rejected_total{code=\"INVALID_ARGUMENT\"}"),
            static_cast<double>(BadCases().size()));
}

// Found by fuzz/openai_body: a number too large for a double threw past the body parser's
// catch and ended the server.
TEST(ServerValidationTest, AnHttpBodyWithANumberTooLargeForADoubleIsA400AndTheServerLives) {
  const std::string dir = MakeServerModel(ScratchDir("model"));
  auto server = ServerProcess::Start({"--model", dir});
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client http("127.0.0.1", (*server)->http_port());
  auto models = http.Get("/v1/models");
  ASSERT_TRUE(models);
  const std::string model = nlohmann::json::parse(models->body)["data"][0]["id"];
  auto bad = http.Post("/v1/completions", R"({"model": "m", "prompt": "Hi", "max_tokens": 1e400})",
                       "application/json");
  ASSERT_TRUE(bad) << (*server)->Log();
  EXPECT_EQ(bad->status, 400);
  EXPECT_THAT(bad->body, HasSubstr("not valid JSON"));
  auto good = http.Post("/v1/completions",
                        nlohmann::json{{"model", model}, {"prompt", "Hi"}, {"max_tokens", 2}}.dump(),
                        "application/json");
  ASSERT_TRUE(good) << (*server)->Log();
  EXPECT_EQ(good->status, 200) << good->body;
}

TEST(ServerValidationTest, AFullWaitingQueueGivesResourceExhausted) {
  const std::string dir = MakeServerModel(ScratchDir("model"));
  // One sequence runs and one request may wait (one not yet admitted counts as waiting), so
  // of six long requests sent at once some must find the queue full; the accepted ones still
  // run to their end.
  auto server = ServerProcess::Start({"--model", dir, "--max_seqs", "1", "--queue_limit", "1"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Connect((*server)->address());
  v1::GenerateRequest long_request = GoodRequest();
  long_request.mutable_stopping()->set_max_tokens(300);
  long_request.mutable_stopping()->set_ignore_eos(true);
  std::vector<Streamed> results(6);
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] { results[i] = StreamGenerate(*stub, long_request); });
  }
  for (std::thread& t : clients) t.join();
  int refused = 0, served = 0;
  for (const Streamed& r : results) {
    if (r.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      EXPECT_THAT(r.status.error_message(), HasSubstr("queue is full"));
    } else {
      ASSERT_TRUE(r.status.ok()) << r.status.error_message();
      EXPECT_EQ(r.tokens.at(0).size(), 300u);
      ++served;
    }
  }
  EXPECT_GE(refused, 1);
  EXPECT_GE(served, 1);
  const Streamed later = StreamGenerate(*stub, GoodRequest());
  EXPECT_TRUE(later.status.ok()) << later.status.error_message();
}

TEST(ServerValidationTest, BadFlagsStopTheServerWithAClearMessage) {
  const std::string dir = MakeServerModel(ScratchDir("model"));
  auto [code, output] =
      ServerProcess::RunToExit({"--model", dir, "--backend", "cuda", "--port", "0"});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(output, HasSubstr("--backend cuda"));
  std::tie(code, output) = ServerProcess::RunToExit({"--model", dir, "--backend", "tpu"});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(output, HasSubstr("--backend must be auto, cpu or cuda"));
  std::tie(code, output) =
      ServerProcess::RunToExit({"--model", "/nonexistent", "--port", "0", "--metrics_port", "-1"});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(output, HasSubstr("/nonexistent"));
  std::tie(code, output) = ServerProcess::RunToExit({"--model", dir, "--kv_cache_memory", "lots"});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(output, HasSubstr("--kv_cache_memory"));
}

}  // namespace
}  // namespace moe::testing
