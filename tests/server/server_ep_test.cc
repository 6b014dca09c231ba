// moe-server under a real mpirun (expert parallelism, data-parallel attention): rank 0
// serves gRPC and relays requests to the other ranks' engines. A stream served by 2 and by
// 4 ranks equals the one-rank stream token for token, text included; requests spread over
// the ranks; cancels leave every rank's KV cache free; and a rank killed mid-stream ends
// the group and the stream with an error instead of a hang.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"
#include "tests/server/server_test_util.h"
#include "tests/test_util.h"

namespace moe::testing {
namespace {

using ::testing::HasSubstr;

v1::GenerateRequest Request(int i, int max_tokens) {
  v1::GenerateRequest r;
  if (i % 3 == 0) {
    r.set_text(absl::StrCat("Request number ", i, ": tell me about experts."));
  } else {
    for (int t = 0; t < 3 + i % 11; ++t) r.mutable_token_ids()->add_ids((37 * i + 11 * t) % 1500 + 1);
  }
  r.mutable_sampling()->set_temperature(i % 4 == 0 ? 0.0f : 0.9f);
  r.mutable_sampling()->set_top_p(0.95f);
  r.mutable_sampling()->set_seed(100 + i);
  if (i % 5 == 1) r.mutable_sampling()->set_n(2);
  r.mutable_stopping()->set_max_tokens(max_tokens);
  r.mutable_stopping()->set_ignore_eos(true);
  return r;
}

// Streams requests 0..n-1 at once, one thread each.
std::vector<Streamed> StreamAll(const std::string& address, int n, int max_tokens,
                                std::function<StreamOptions(int)> options = nullptr) {
  std::vector<Streamed> out(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      auto stub = Connect(address);
      out[i] = StreamGenerate(*stub, Request(i, max_tokens), options ? options(i) : StreamOptions{});
    });
  }
  for (std::thread& t : threads) t.join();
  return out;
}

absl::StatusOr<v1::Load> GetLoad(v1::Generation::Stub& stub) {
  grpc::ClientContext context;
  v1::Load load;
  const grpc::Status status = stub.GetLoad(&context, v1::GetLoadRequest(), &load);
  if (!status.ok()) return absl::UnavailableError(status.error_message());
  return load;
}

// A long stream on `server`; once it has had three chunks, `fault` runs. Returns how the
// stream ended (within a minute: later is a hang).
Streamed StreamWhile(const ServerProcess& server, const std::function<void()>& fault) {
  std::atomic<int> chunks{0};
  Streamed s;
  std::thread client([&] {
    auto stub = Connect(server.address());
    s = StreamGenerate(*stub, Request(1, 500), {.deadline = absl::Seconds(60),
                                               .on_chunk = [&](int n) { chunks = n; }});
  });
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (chunks < 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  fault();
  client.join();
  return s;
}

class ServerEpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(MOE_MPIRUN).empty()) GTEST_SKIP() << "this build has no MPI (libopenmpi-dev)";
    dir_ = MakeServerModel(ScratchDir("model"));
  }
  std::unique_ptr<ServerProcess> Start(int ranks, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--model", dir_, "--kv_blocks", "256", "--backend", "cpu"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = ServerProcess::Start(args, absl::Seconds(120), ranks);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }
  std::string dir_;
};

TEST_F(ServerEpTest, StreamsOnTwoAndFourRanksEqualOneRank) {
  constexpr int kRequests = 10, kTokens = 12;
  auto one = Start(1);
  ASSERT_NE(one, nullptr);
  const std::vector<Streamed> want = StreamAll(one->address(), kRequests, kTokens);
  one.reset();
  for (int ranks : {2, 4}) {
    auto group = Start(ranks);
    ASSERT_NE(group, nullptr);
    const std::vector<Streamed> got = StreamAll(group->address(), kRequests, kTokens);
    for (int i = 0; i < kRequests; ++i) {
      SCOPED_TRACE(absl::StrCat("request ", i, " on ", ranks, " ranks"));
      ASSERT_TRUE(want[i].status.ok()) << want[i].status.error_message();
      ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message() << "\n" << group->Log();
      EXPECT_EQ(got[i].tokens, want[i].tokens);
      EXPECT_EQ(got[i].text, want[i].text);
      for (const auto& [choice, final] : want[i].finals) {
        EXPECT_EQ(got[i].finals.at(choice).reason(), final.reason());
        EXPECT_EQ(got[i].finals.at(choice).usage().completion_tokens(), final.usage().completion_tokens());
      }
    }
    // The requests really ran on several ranks, and each rank reports its share.
    auto stub = Connect(group->address());
    auto load = GetLoad(*stub);
    ASSERT_TRUE(load.ok()) << load.status();
    ASSERT_EQ(load->ranks_size(), ranks);
    int ranks_that_stepped = 0;
    for (const v1::RankLoad& r : load->ranks()) {
      EXPECT_GT(r.steps(), 0) << "rank " << r.rank();
      ranks_that_stepped += r.expert_rows_received() > 0;
    }
    EXPECT_EQ(ranks_that_stepped, ranks) << "every rank owns experts, so every rank gets rows";
    const std::string metrics = HttpGet(group->metrics_port(), "/metrics");
    EXPECT_THAT(metrics, HasSubstr(absl::StrCat("moe_rank_steps_total{rank=\"", ranks - 1, "\"}")));
    EXPECT_THAT(metrics, HasSubstr("moe_rank_load_imbalance "));
  }
}

TEST_F(ServerEpTest, OneRequestOnFourRanksCompletesWithThreeIdleRanks) {
  auto group = Start(4);
  ASSERT_NE(group, nullptr);
  auto stub = Connect(group->address());
  const Streamed s = StreamGenerate(*stub, Request(2, 20));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message() << "\n" << group->Log();
  EXPECT_EQ(s.finals.at(0).usage().completion_tokens(), 20);
  // The final reached the stream inside the last step; the ranks' loads come at its end.
  absl::SleepFor(absl::Milliseconds(300));
  auto load = GetLoad(*stub);
  ASSERT_TRUE(load.ok()) << load.status();
  ASSERT_EQ(load->ranks_size(), 4);
  int idle_ranks_that_stepped = 0;
  for (const v1::RankLoad& r : load->ranks()) {
    // Rank 0 took the request (the first placement); the others stepped with it, idle.
    if (r.rank() != 0 && r.steps() >= 20 && r.expert_rows_sent() == 0) ++idle_ranks_that_stepped;
  }
  EXPECT_EQ(idle_ranks_that_stepped, 3) << load->DebugString();
}

TEST_F(ServerEpTest, ConcurrentRequestsSpreadOverFourRanks) {
  constexpr int kRequests = 64;
  auto group = Start(4, {"--max_seqs", "64"});
  ASSERT_NE(group, nullptr);
  std::atomic<bool> done{false};
  int best_total = 0;
  v1::Load busiest;
  std::thread watcher([&] {
    auto stub = Connect(group->address());
    while (!done) {
      auto load = GetLoad(*stub);
      if (load.ok() && load->running() + load->waiting() > best_total) {
        best_total = load->running() + load->waiting();
        busiest = *load;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
  });
  const std::vector<Streamed> streams = StreamAll(group->address(), kRequests, 48);
  done = true;
  watcher.join();
  for (const Streamed& s : streams) EXPECT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_GE(best_total, kRequests / 2) << "the requests should have overlapped";
  for (const v1::RankLoad& r : busiest.ranks()) {
    EXPECT_LE(r.running() + r.waiting(), 2 * best_total / 4)
        << "rank " << r.rank() << " of 4 holds more than twice its share of " << best_total;
  }
  EXPECT_LE(busiest.rank_load_imbalance(), 2.0);
}

TEST_F(ServerEpTest, RandomCancelsOnFourRanksLeaveEveryBlockFree) {
  constexpr int kRequests = 200, kConcurrent = 20;
  auto group = Start(4);
  ASSERT_NE(group, nullptr);
  std::atomic<int> next{0}, cancelled{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kConcurrent; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(c);
      auto stub = Connect(group->address());
      for (int i; (i = next++) < kRequests;) {
        const int cancel_after = rng() % 3 == 0 ? -1 : static_cast<int>(rng() % 6);
        const Streamed s = StreamGenerate(*stub, Request(i, 24), {.cancel_after_chunks = cancel_after});
        if (s.status.error_code() == grpc::StatusCode::CANCELLED) ++cancelled;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_GT(cancelled.load(), kRequests / 4);
  auto stub = Connect(group->address());
  // Aborts free their blocks at the ranks' next step; give the group a few.
  absl::StatusOr<v1::Load> load;
  for (int tries = 0; tries < 100; ++tries) {
    load = GetLoad(*stub);
    ASSERT_TRUE(load.ok()) << load.status();
    if (load->running() + load->waiting() == 0 && load->kv_blocks_used() == 0) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(load->ranks_size(), 4);
  for (const v1::RankLoad& r : load->ranks()) {
    EXPECT_EQ(r.running() + r.waiting(), 0) << "rank " << r.rank();
    EXPECT_EQ(r.kv_blocks_used(), 0) << "rank " << r.rank() << " still holds KV blocks";
  }
}

TEST_F(ServerEpTest, AKilledRankEndsTheGroupAndTheStreamWithAnError) {
  auto group = Start(2, {"--collective_timeout", "5s"});
  ASSERT_NE(group, nullptr);
  const pid_t rank1 = group->RankPid(1);
  ASSERT_GT(rank1, 0) << group->Log();
  const absl::Time killed = absl::Now();
  const Streamed s = StreamWhile(*group, [&] { kill(rank1, SIGKILL); });
  EXPECT_FALSE(s.status.ok()) << "the stream must end with an error, not a clean finish";
  EXPECT_NE(s.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << "it hung until the deadline";
  const int code = group->Wait(absl::Seconds(30));
  EXPECT_NE(code, 0);
  EXPECT_NE(code, -1) << "the group did not exit within 30 s of the kill";
  EXPECT_LT(absl::Now() - killed, absl::Seconds(30));
  // mpirun names the rank it lost.
  EXPECT_THAT(group->Log(), HasSubstr("process rank 1")) << group->Log();
}

TEST_F(ServerEpTest, AHungRankEndsTheGroupWithinTheCollectiveTimeoutNamingIt) {
  auto group = Start(2, {"--collective_timeout", "3s"});
  ASSERT_NE(group, nullptr);
  const pid_t rank1 = group->RankPid(1);
  ASSERT_GT(rank1, 0) << group->Log();
  const absl::Time stopped = absl::Now();
  const Streamed s = StreamWhile(*group, [&] { kill(rank1, SIGSTOP); });  // alive, never answering
  // Rank 0 ends the stream itself, with a status that says why, before the group ends.
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::UNAVAILABLE) << s.status.error_message();
  EXPECT_THAT(s.status.error_message(), HasSubstr("rank 1 does not answer"));
  const int code = group->Wait(absl::Seconds(30));
  kill(rank1, SIGCONT);
  EXPECT_NE(code, 0);
  EXPECT_NE(code, -1) << "the group did not exit within 30 s of the hang";
  EXPECT_LT(absl::Now() - stopped, absl::Seconds(30));
  EXPECT_THAT(group->Log(), HasSubstr("rank 1 does not answer")) << group->Log();
}

}  // namespace
}  // namespace moe::testing
