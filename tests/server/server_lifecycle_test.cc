// moe-server end to end, lifecycle and operations: 64 concurrent streams with cancels and
// deadlines leave nothing behind, SIGTERM drains open streams (health NOT_SERVING, new
// requests UNAVAILABLE, exit 0), reflection lists the service, and /metrics, GetModelInfo
// and GetLoad count what was served.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "moe/backend.h"
#include "tests/server/server_process.h"
#include "tests/server/server_test_util.h"
#include "tests/test_util.h"

namespace moe::testing {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

class ServerLifecycleTest : public ServerModelTest {
 protected:
  void StartServer(std::vector<std::string> args) {
    ServerModelTest::StartServer(std::move(args));
    if (server_ == nullptr) return;
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::Generation::NewStub(channel_);
  }

  static v1::GenerateRequest Request(std::vector<int32_t> prompt, int max_tokens) {
    v1::GenerateRequest r;
    r.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
    r.mutable_sampling()->set_temperature(0.7f);
    r.mutable_sampling()->set_seed(prompt[0]);
    r.mutable_stopping()->set_max_tokens(max_tokens);
    r.mutable_stopping()->set_ignore_eos(true);
    return r;
  }

  v1::Load GetLoad() {
    grpc::ClientContext context;
    v1::Load load;
    const grpc::Status status = stub_->GetLoad(&context, v1::GetLoadRequest(), &load);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return load;
  }

  // Polls GetLoad until `done` holds or `timeout` passes; returns the last answer.
  v1::Load WaitForLoad(const std::function<bool(const v1::Load&)>& done,
                       absl::Duration timeout = absl::Seconds(20)) {
    const absl::Time deadline = absl::Now() + timeout;
    v1::Load load = GetLoad();
    while (!done(load) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(2));
      load = GetLoad();
    }
    return load;
  }

  grpc::health::v1::HealthCheckResponse::ServingStatus Health() {
    auto health = grpc::health::v1::Health::NewStub(channel_);
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse response;
    const grpc::Status status =
        health->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.status();
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> stub_;
};

TEST_F(ServerLifecycleTest, SixtyFourStreamsWithCancelsAndDeadlinesLeaveNothingBehind) {
  StartServer({"--kv_blocks", "2048"});
  enum class Kind { kComplete, kCancel, kDeadline };
  std::vector<Kind> kinds(64, Kind::kComplete);
  std::mt19937 rng(3);
  std::vector<int> order(64);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  for (int i = 0; i < 21; ++i) kinds[order[i]] = Kind::kCancel;     // a random third
  for (int i = 21; i < 29; ++i) kinds[order[i]] = Kind::kDeadline;  // and eight more

  std::vector<Streamed> results(64);
  std::vector<std::thread> clients;
  for (int i = 0; i < 64; ++i) {
    clients.emplace_back([&, i] {
      const bool complete = kinds[i] == Kind::kComplete;
      v1::GenerateRequest request = Request({i + 1, 2 * i + 3, 500 + i}, complete ? 48 : 500);
      StreamOptions options;
      if (kinds[i] == Kind::kCancel) options.cancel_after_chunks = 3;
      if (kinds[i] == Kind::kDeadline) options.deadline = absl::Milliseconds(50);
      results[i] = StreamGenerate(*stub_, request, options);
    });
  }
  for (std::thread& t : clients) t.join();

  int deadlines_hit = 0;
  for (int i = 0; i < 64; ++i) {
    const Streamed& r = results[i];
    switch (kinds[i]) {
      case Kind::kComplete:
        ASSERT_TRUE(r.status.ok()) << i << ": " << r.status.error_message();
        EXPECT_EQ(r.tokens.at(0).size(), 48u) << i;
        EXPECT_EQ(r.finals.at(0).reason(), v1::FINISH_REASON_LENGTH) << i;
        break;
      case Kind::kCancel:
        EXPECT_EQ(r.status.error_code(), grpc::StatusCode::CANCELLED) << i;
        EXPECT_TRUE(r.finals.empty()) << i << " was cancelled after 3 chunks of 500 tokens";
        break;
      case Kind::kDeadline:
        // A stream may beat its deadline on a fast machine; then it must be whole.
        if (r.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
          ++deadlines_hit;
        } else {
          EXPECT_TRUE(r.status.ok()) << i << ": " << r.status.error_message();
          EXPECT_EQ(r.tokens.at(0).size(), 500u) << i;
        }
        break;
    }
  }
  EXPECT_GT(deadlines_hit, 0) << "no stream hit its 50 ms deadline";

  const v1::Load load = WaitForLoad([](const v1::Load& l) {
    return l.running() == 0 && l.waiting() == 0 && l.kv_blocks_used() == 0 &&
           l.active_streams() == 0;
  });
  EXPECT_EQ(load.running(), 0);
  EXPECT_EQ(load.waiting(), 0);
  EXPECT_EQ(load.kv_blocks_used(), 0)
      << "every KV block should be free, " << load.kv_blocks_total();
  EXPECT_EQ(load.active_streams(), 0);
  const std::string metrics = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(metrics, "moe_requests_finished_total{reason=\"length\"}"),
            64 - 21 - deadlines_hit);
  // Every cancel came after its third chunk, so the engine aborted it; a deadline may have
  // passed before the server took the request at all (a slow machine, a sanitizer).
  const double aborted = MetricValue(metrics, "moe_requests_finished_total{reason=\"aborted\"}");
  EXPECT_GE(aborted, 21);
  EXPECT_LE(aborted, 21 + deadlines_hit);

  const Streamed after = StreamGenerate(*stub_, Request({9, 9, 9}, 8));
  EXPECT_TRUE(after.status.ok()) << "the server should keep serving: "
                                 << after.status.error_message();
}

TEST_F(ServerLifecycleTest, CancellingTheOnlyStreamShowsItsBlocksFreeInGetLoad) {
  // With nothing else running, the engine's next step only drains the abort: the load it
  // reports must still show the sequence gone and its blocks back.
  StartServer({"--kv_blocks", "256"});
  const Streamed s = StreamGenerate(*stub_, Request({1, 2, 3}, 500), {.cancel_after_chunks = 1});
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::CANCELLED);
  // The client sees CANCELLED before the server's handler has noticed it and returned, so
  // the open-stream count is waited for too.
  const v1::Load load = WaitForLoad(
      [](const v1::Load& l) {
        return l.running() == 0 && l.kv_blocks_used() == 0 && l.active_streams() == 0;
      },
      absl::Seconds(5));
  EXPECT_EQ(load.running(), 0);
  EXPECT_EQ(load.kv_blocks_used(), 0);
  EXPECT_EQ(load.active_streams(), 0);
}

TEST_F(ServerLifecycleTest, SigtermDrainsOpenStreamsRefusesNewOnesAndExitsZero) {
  // Two sequences at a time, so that the 16 streams take a while (over 1000 steps) to drain.
  StartServer({"--max_seqs", "2", "--drain_timeout", "60s"});
  ASSERT_EQ(Health(), grpc::health::v1::HealthCheckResponse::SERVING);
  std::vector<Streamed> results(16);
  std::vector<std::thread> clients;
  for (int i = 0; i < 16; ++i) {
    clients.emplace_back([&, i] {
      results[i] = StreamGenerate(*stub_, Request({i + 1, 40, 41}, 160));
    });
  }
  const v1::Load open = WaitForLoad([](const v1::Load& l) { return l.active_streams() == 16; });
  ASSERT_EQ(open.active_streams(), 16);

  server_->Signal(SIGTERM);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Health() != grpc::health::v1::HealthCheckResponse::NOT_SERVING && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(Health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  int http_status = 0;
  EXPECT_THAT(HttpGet(server_->metrics_port(), "/health", &http_status),
              HasSubstr("STATE_DRAINING"));
  EXPECT_EQ(http_status, 503);
  const Streamed refused = StreamGenerate(*stub_, Request({5, 6, 7}, 4));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("draining"));
  EXPECT_GT(GetLoad().active_streams(), 0)
      << "the drain was over before the checks: make it longer";

  for (std::thread& t : clients) t.join();
  for (int i = 0; i < 16; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    EXPECT_EQ(results[i].finals.at(0).reason(), v1::FINISH_REASON_LENGTH) << i;
    EXPECT_EQ(results[i].tokens.at(0).size(), 160u) << i;
  }
  EXPECT_EQ(server_->Wait(), 0) << server_->Log();
}

TEST_F(ServerLifecycleTest, ASecondSigtermAbortsTheDrainingStreamsAndExitsZero) {
  // One sequence at a time and 8 x 400 tokens: the drain alone would take many seconds.
  StartServer({"--max_seqs", "1", "--drain_timeout", "600s"});
  std::vector<Streamed> results(8);
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] { results[i] = StreamGenerate(*stub_, Request({i + 1, 7}, 400)); });
  }
  ASSERT_EQ(WaitForLoad([](const v1::Load& l) { return l.active_streams() == 8; }).active_streams(), 8);
  server_->Signal(SIGTERM);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Health() != grpc::health::v1::HealthCheckResponse::NOT_SERVING && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(Health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  ASSERT_GT(GetLoad().active_streams(), 1) << "the drain was over before the second signal";

  const absl::Time second = absl::Now();
  server_->Signal(SIGTERM);
  EXPECT_EQ(server_->Wait(absl::Seconds(20)), 0) << server_->Log();
  EXPECT_LT(absl::Now() - second, absl::Seconds(10)) << "the second signal did not cut the drain";
  for (std::thread& t : clients) t.join();
  int aborted = 0;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    ASSERT_EQ(results[i].finals.size(), 1u) << i;
    if (results[i].finals[0].reason() == v1::FINISH_REASON_ABORTED) ++aborted;
  }
  EXPECT_GT(aborted, 0);
  EXPECT_THAT(server_->Log(), HasSubstr("second signal: aborting"));
}

TEST_F(ServerLifecycleTest, MergedChunksStayUnderTheMessageLimit) {
  // A slow reader lets chunks of 8 choices with 20 logprobs each queue up and merge; no
  // merged chunk may outgrow --max_message_bytes (gRPC would refuse to send it).
  StartServer({"--max_message_bytes", "1024"});
  v1::GenerateRequest request = Request({1, 2, 3}, 48);
  request.mutable_sampling()->set_n(8);
  request.mutable_output()->set_logprobs(true);
  request.mutable_output()->set_top_logprobs(20);
  const Streamed s = StreamGenerate(*stub_, request, {.on_chunk = [](int chunks) {
                                      if (chunks < 3) absl::SleepFor(absl::Milliseconds(300));
                                    }});
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  for (int c = 0; c < 8; ++c) EXPECT_EQ(s.tokens.at(c).size(), 48u) << c;
}

TEST_F(ServerLifecycleTest, HealthAnswersWhileOtherHttpClientsIdle) {
  // Keep-alive scrapers and clients stuck mid-request must not hold the threads /health
  // needs (a probe gives up after about 1 s).
  StartServer({});
  std::vector<std::unique_ptr<httplib::Client>> idle;
  for (int i = 0; i < 4; ++i) {  // each keeps its connection open after a scrape
    idle.push_back(std::make_unique<httplib::Client>("127.0.0.1", server_->metrics_port()));
    idle.back()->set_keep_alive(true);
    ASSERT_TRUE(idle.back()->Get("/metrics"));
  }
  std::vector<int> stuck;
  for (int i = 0; i < 4; ++i) {  // each sends half a request line and waits
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(server_->metrics_port());
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    ASSERT_GT(write(fd, "GET /hea", 8), 0);
    stuck.push_back(fd);
  }
  for (int i = 0; i < 3; ++i) {
    const absl::Time start = absl::Now();
    int status = 0;
    EXPECT_THAT(HttpGet(server_->metrics_port(), "/health", &status), HasSubstr("STATE_SERVING"));
    EXPECT_EQ(status, 200);
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(500)) << "probe " << i;
  }
  for (int fd : stuck) close(fd);
}

TEST_F(ServerLifecycleTest, HttpRefusesMethodsOtherThanGet) {
  StartServer({});
  httplib::Client client("127.0.0.1", server_->metrics_port());
  client.set_connection_timeout(5);
  for (const char* path : {"/metrics", "/health"}) {
    const httplib::Result post = client.Post(path, "x", "text/plain");
    ASSERT_TRUE(post) << path;
    EXPECT_EQ(post->status, 405) << path;
    EXPECT_EQ(post->get_header_value("Allow"), "GET, HEAD") << path;
    EXPECT_THAT(post->body, HasSubstr("POST is not allowed")) << path;
    const httplib::Result del = client.Delete(path);
    ASSERT_TRUE(del) << path;
    EXPECT_EQ(del->status, 405) << path;
    const httplib::Result head = client.Head(path);
    ASSERT_TRUE(head) << path;
    EXPECT_EQ(head->status, 200) << path;
  }
  EXPECT_EQ(client.Get("/nothing-here")->status, 404);
}

TEST_F(ServerLifecycleTest, ReflectionListsTheGenerationService) {
  StartServer({});
  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel_);
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  ASSERT_TRUE(stream->Write(request));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  std::vector<std::string> names;
  for (const auto& service : response.list_services_response().service())
    names.push_back(service.name());
  EXPECT_THAT(names, Contains("moe.v1.Generation"));
  EXPECT_THAT(names, Contains("grpc.reflection.v1alpha.ServerReflection"));
  while (stream->Read(&response)) {
  }
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServerLifecycleTest, MetricsModelInfoAndLoadCountWhatWasServed) {
  StartServer({});
  grpc::ClientContext info_context;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&info_context, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.architecture(), "Qwen3MoeForCausalLM");
  EXPECT_EQ(info.vocab_size(), kServerModelVocab);
  EXPECT_EQ(info.max_context(), kServerModelContext);
  EXPECT_EQ(info.num_experts(), kServerModelExperts);
  EXPECT_EQ(info.top_k(), 2);
  EXPECT_EQ(info.dtype(), "f32");
  EXPECT_EQ(info.backend(), ResolveBackend("auto").value());  // "cuda" where a GPU is
  EXPECT_EQ(info.expert_parallel_size(), 1);
  EXPECT_TRUE(info.has_tokenizer());
  EXPECT_TRUE(info.has_chat_template());

  // Distinct prompts (no prefix-cache hits): every prompt token and every generated token
  // but the last runs through both layers and is routed to top_k = 2 experts in each.
  const std::vector<std::pair<std::vector<int32_t>, int>> requests = {
      {{11, 12, 13}, 10}, {{21, 22, 23, 24, 25}, 20}, {{31}, 30}};
  int prompt_tokens = 0, new_tokens = 0, routed = 0;
  for (const auto& [prompt, max_tokens] : requests) {
    const Streamed s = StreamGenerate(*stub_, Request(prompt, max_tokens));
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(static_cast<int>(s.tokens.at(0).size()), max_tokens);
    prompt_tokens += prompt.size();
    new_tokens += max_tokens;
    routed += (prompt.size() + max_tokens - 1) * 2 * 2;
  }
  int http_status = 0;
  const std::string metrics = HttpGet(server_->metrics_port(), "/metrics", &http_status);
  ASSERT_EQ(http_status, 200);
  EXPECT_EQ(MetricValue(metrics, "moe_requests_finished_total{reason=\"length\"}"), 3);
  EXPECT_EQ(MetricValue(metrics, "moe_prompt_tokens_total"), prompt_tokens);
  EXPECT_EQ(MetricValue(metrics, "moe_generation_tokens_total"), new_tokens);
  EXPECT_EQ(MetricValue(metrics, "moe_time_to_first_token_seconds_count"), 3);
  EXPECT_EQ(MetricValue(metrics, "moe_inter_token_latency_seconds_count"), new_tokens - 3);
  EXPECT_EQ(MetricValue(metrics, "moe_e2e_request_latency_seconds_count"), 3);
  EXPECT_EQ(MetricValue(metrics, "moe_request_queue_time_seconds_bucket{le=\"+Inf\"}"), 3);
  EXPECT_EQ(MetricValue(metrics, "moe_requests_running"), 0);
  EXPECT_EQ(MetricValue(metrics, "moe_kv_cache_usage_ratio"), 0);
  EXPECT_EQ(MetricValue(metrics, "moe_kv_cache_blocks_used"), 0);
  EXPECT_EQ(MetricValue(metrics, "moe_kv_cache_blocks_total"), GetLoad().kv_blocks_total());
  double routed_in_metrics = 0;
  for (int e = 0; e < kServerModelExperts; ++e) {
    routed_in_metrics +=
        MetricValue(metrics, absl::StrCat("moe_routed_tokens_total{expert=\"", e, "\"}"));
  }
  EXPECT_EQ(routed_in_metrics, routed);

  const v1::Load load = GetLoad();
  ASSERT_EQ(load.routed_tokens_per_expert_size(), kServerModelExperts);
  EXPECT_EQ(std::accumulate(load.routed_tokens_per_expert().begin(),
                            load.routed_tokens_per_expert().end(), int64_t{0}),
            routed);
  EXPECT_GT(load.tokens_per_second(), 0);
  EXPECT_EQ(load.kv_blocks_used(), 0);
  EXPECT_THAT(HttpGet(server_->metrics_port(), "/health", &http_status),
              HasSubstr("STATE_SERVING"));
  EXPECT_EQ(http_status, 200);
}

}  // namespace
}  // namespace moe::testing
