// moe-server-load: how many streamed tokens and requests per second a running moe-server
// sustains: `--streams` clients each send requests back to back (random token-id prompts,
// greedy, ignore_eos) until `--requests` have finished. With --model it first runs the
// same workload through the engine in this process, so the server's overhead shows.
// A measuring program, not a test.
//
//   moe-server-load --address 127.0.0.1:50051 --streams 32 --requests 512 --max_tokens 64
//   moe-server-load --address 127.0.0.1:50051 --model /tmp/tiny   # plus the engine alone
#include <atomic>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "moe/moe_model.h"
#include "runtime/engine/engine.h"
#include "tests/server/server_test_util.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051", "moe-server address");
ABSL_FLAG(std::string, model, "", "if set, also run the workload on this model in-process");
ABSL_FLAG(int, streams, 32, "concurrent client streams");
ABSL_FLAG(int, requests, 512, "requests in all");
ABSL_FLAG(int, prompt_len, 16, "prompt tokens per request");
ABSL_FLAG(int, max_tokens, 64, "new tokens per request");
ABSL_FLAG(int, vocab, 1000, "prompt ids are drawn from [0, vocab)");

namespace moe {
namespace {

struct Totals {
  double seconds = 0;
  int64_t requests = 0;
  int64_t tokens = 0;
};

std::vector<int32_t> Prompt(int i) {
  std::mt19937 rng(i);
  std::vector<int32_t> p(absl::GetFlag(FLAGS_prompt_len));
  for (int32_t& t : p)
    t = std::uniform_int_distribution<int>(0, absl::GetFlag(FLAGS_vocab) - 1)(rng);
  return p;
}

Totals RunServer() {
  std::atomic<int> next{0};
  std::atomic<int64_t> tokens{0}, done{0};
  const int total = absl::GetFlag(FLAGS_requests);
  auto channel =
      grpc::CreateChannel(absl::GetFlag(FLAGS_address), grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);
  const absl::Time start = absl::Now();
  std::vector<std::thread> clients;
  for (int c = 0; c < absl::GetFlag(FLAGS_streams); ++c) {
    clients.emplace_back([&] {
      for (int i; (i = next++) < total;) {
        v1::GenerateRequest r;
        for (int32_t t : Prompt(i)) r.mutable_token_ids()->add_ids(t);
        r.mutable_sampling()->set_temperature(0);
        r.mutable_stopping()->set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
        r.mutable_stopping()->set_ignore_eos(true);
        r.mutable_output()->set_return_text(false);
        const testing::Streamed s = testing::StreamGenerate(*stub, r);
        if (!s.status.ok())
          std::fprintf(stderr, "request %d: %s\n", i, s.status.error_message().c_str());
        tokens += s.tokens.empty() ? 0 : s.tokens.at(0).size();
        ++done;
      }
    });
  }
  for (std::thread& t : clients) t.join();
  return {absl::ToDoubleSeconds(absl::Now() - start), done.load(), tokens.load()};
}

Totals RunEngine(const std::string& dir) {
  auto model = MoeModel::Load(dir);
  if (!model.ok()) return {};
  auto engine = Engine::Create(**model, {.num_kv_blocks = 4096});
  if (!engine.ok()) return {};
  struct Count : OutputSink {
    void OnDelta(const OutputDelta& d) override { tokens += d.token_ids.size(); }
    void OnFinal(const FinalOutput&) override {}
    int64_t tokens = 0;
  };
  std::vector<std::shared_ptr<Count>> sinks;
  const absl::Time start = absl::Now();
  // Keep `streams` requests in flight, as the clients do.
  int submitted = 0;
  const int total = absl::GetFlag(FLAGS_requests);
  while (submitted < total || (*engine)->GetStats().running + (*engine)->GetStats().waiting > 0) {
    while (submitted < total && (*engine)->GetStats().running + (*engine)->GetStats().waiting <
                                    absl::GetFlag(FLAGS_streams)) {
      Request r{.id = std::to_string(submitted), .prompt = Prompt(submitted)};
      r.sampling.temperature = 0;
      r.stopping.max_tokens = absl::GetFlag(FLAGS_max_tokens);
      r.stopping.ignore_eos = true;
      sinks.push_back(std::make_shared<Count>());
      if (!(*engine)->Submit(r, sinks.back()).ok()) return {};
      ++submitted;
      if (!(*engine)->Step().ok()) return {};  // admits it, so the stats count it
    }
    if (!(*engine)->Step().ok()) return {};
  }
  Totals t{absl::ToDoubleSeconds(absl::Now() - start), total, 0};
  for (const auto& s : sinks) t.tokens += s->tokens;
  return t;
}

void Print(const char* what, const Totals& t) {
  std::printf("%-8s %6lld requests, %7lld tokens in %6.2f s: %8.1f tokens/s, %6.1f requests/s\n",
              what, static_cast<long long>(t.requests), static_cast<long long>(t.tokens), t.seconds,
              t.tokens / t.seconds, t.requests / t.seconds);
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (const std::string dir = absl::GetFlag(FLAGS_model); !dir.empty())
    moe::Print("engine", moe::RunEngine(dir));
  moe::Print("server", moe::RunServer());
  return 0;
}
