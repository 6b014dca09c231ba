// moe-server-load: how many streamed tokens and requests per second a running moe-server
// sustains: `--streams` clients each send requests back to back (random token-id prompts,
// or with --chat a chat message; greedy, ignore_eos) until `--requests` have finished.
// --api picks gRPC, the OpenAI HTTP API (streaming, as server-sent events) or both, one
// after the other on the same workload; with --pid it also reports the server's thread
// count (the most seen while loaded). With --model it first runs the same workload through
// the engine in this process, so the server's overhead shows. A measuring program, not a test.
//
//   moe-server-load --address 127.0.0.1:50051 --streams 32 --requests 512 --max_tokens 64
//   moe-server-load --address 127.0.0.1:50051 --model /tmp/tiny   # plus the engine alone
//   moe-server-load --api both --chat --streams 1000 --requests 1000 --http_address 127.0.0.1:8000 \
//       --pid $(pgrep moe-server)
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "httplib.h"
#include "nlohmann/json.hpp"

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
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
ABSL_FLAG(std::string, api, "grpc", "grpc, http (the OpenAI API, streaming) or both");
ABSL_FLAG(std::string, http_address, "127.0.0.1:8000", "moe-server's HTTP address");
ABSL_FLAG(std::string, http_model, "default", "the served model name, for HTTP");
ABSL_FLAG(bool, chat, false, "send a chat message instead of token ids");
ABSL_FLAG(int, pid, 0, "moe-server's pid: report its thread count");
ABSL_FLAG(int, rounds, 1, "repeat the load this many times, alternating which API goes first");

namespace moe {
namespace {

struct Totals {
  double seconds = 0;
  int64_t requests = 0;
  int64_t tokens = 0;
  int64_t failed = 0;
  int max_threads = 0;  // of the server, while loaded (0: not watched)
};

std::vector<int32_t> Prompt(int i) {
  std::mt19937 rng(i);
  std::vector<int32_t> p(absl::GetFlag(FLAGS_prompt_len));
  for (int32_t& t : p)
    t = std::uniform_int_distribution<int>(0, absl::GetFlag(FLAGS_vocab) - 1)(rng);
  return p;
}

// Chat prompts differ from run to run too: a server's prefix cache remembers earlier runs.
std::string ChatText(int i) {
  static const unsigned run = std::random_device{}();
  return "Tell me story number " + std::to_string(i) + " of run " + std::to_string(run) + " in a few words.";
}

// The thread count of process `pid`, from /proc.
int Threads(int pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return 0;
}

// The server's thread count, sampled while the load runs.
class ThreadWatch {
 public:
  explicit ThreadWatch(int pid) : pid_(pid) {
    if (pid_ > 0) thread_ = std::thread([this] {
        while (!stop_) {
          max_ = std::max(max_.load(), Threads(pid_));
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      });
  }
  int Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return max_;
  }
 private:
  const int pid_;
  std::atomic<bool> stop_{false};
  std::atomic<int> max_{0};
  std::thread thread_;
};

// `streams` clients, a thread each, run `one(i)` for requests i until all are done; `one`
// returns the tokens it got, or -1 for a failure.
template <class One>
Totals RunClients(One one) {
  std::atomic<int> next{0};
  std::atomic<int64_t> tokens{0}, done{0}, failed{0};
  const int total = absl::GetFlag(FLAGS_requests);
  ThreadWatch watch(absl::GetFlag(FLAGS_pid));
  const absl::Time start = absl::Now();
  std::vector<std::thread> clients;
  for (int c = 0; c < absl::GetFlag(FLAGS_streams); ++c) {
    clients.emplace_back([&] {
      for (int i; (i = next++) < total;) {
        const int64_t got = one(i);
        if (got < 0) {
          ++failed;
        } else {
          tokens += got;
          ++done;
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  Totals t{absl::ToDoubleSeconds(absl::Now() - start), done.load(), tokens.load(), failed.load()};
  t.max_threads = watch.Stop();
  return t;
}

// Each run's prompts are numbered from its own `base`, so that no run finds another's in the
// prefix cache.
Totals RunHttp(int base) {
  const std::string address = absl::GetFlag(FLAGS_http_address);
  const std::string host = address.substr(0, address.rfind(':'));
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  return RunClients([&](int i) -> int64_t {
    nlohmann::json body = {{"model", absl::GetFlag(FLAGS_http_model)},
                           {"max_tokens", absl::GetFlag(FLAGS_max_tokens)},
                           {"temperature", 0},
                           {"ignore_eos", true},
                           {"stream", true},
                           {"stream_options", {{"include_usage", true}}}};
    std::string path = "/v1/completions";
    if (absl::GetFlag(FLAGS_chat)) {
      path = "/v1/chat/completions";
      body["messages"] = {{{"role", "user"}, {"content", ChatText(base + i)}}};
    } else {
      body["prompt"] = Prompt(base + i);
    }
    httplib::Client client(host, port);
    client.set_read_timeout(600, 0);
    std::string events;
    httplib::Request req;
    req.method = "POST";
    req.path = path;
    req.set_header("Content-Type", "application/json");
    req.body = body.dump();
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      events.append(data, n);
      return true;
    };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    if (!client.send(req, res, error) || res.status != 200) {
      std::fprintf(stderr, "HTTP request %d: status %d, %s\n", i, res.status, httplib::to_string(error).c_str());
      return -1;
    }
    // The usage chunk, just before [DONE], counts the tokens streamed.
    const size_t done = events.rfind("data: [DONE]");
    const size_t usage = events.rfind("data: {", done);
    if (done == std::string::npos || usage == std::string::npos) return -1;
    const auto chunk = nlohmann::json::parse(events.substr(usage + 6, done - usage - 6), nullptr, false);
    if (chunk.is_discarded() || !chunk.contains("usage") || chunk["usage"].is_null()) return -1;
    return chunk["usage"]["completion_tokens"].get<int64_t>();
  });
}


Totals RunServer(int base) {
  auto channel =
      grpc::CreateChannel(absl::GetFlag(FLAGS_address), grpc::InsecureChannelCredentials());
  auto stub = v1::Generation::NewStub(channel);
  return RunClients([&](int i) -> int64_t {
    v1::GenerateRequest r;
    if (absl::GetFlag(FLAGS_chat)) {
      v1::ChatMessage* m = r.mutable_chat()->add_messages();
      m->set_role("user");
      m->set_content(ChatText(base + i));
    } else {
      for (int32_t t : Prompt(base + i)) r.mutable_token_ids()->add_ids(t);
    }
    r.mutable_sampling()->set_temperature(0);
    r.mutable_stopping()->set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
    r.mutable_stopping()->set_ignore_eos(true);
    const testing::Streamed s = testing::StreamGenerate(*stub, r);
    if (!s.status.ok()) {
      std::fprintf(stderr, "request %d: %s\n", i, s.status.error_message().c_str());
      return -1;
    }
    return s.finals.empty() ? 0 : s.finals.begin()->second.usage().completion_tokens();
  });
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
  std::printf("%-8s %6lld requests, %7lld tokens in %6.2f s: %8.1f tokens/s, %6.1f requests/s", what,
              static_cast<long long>(t.requests), static_cast<long long>(t.tokens), t.seconds,
              t.tokens / t.seconds, t.requests / t.seconds);
  if (t.failed > 0) std::printf(", %lld FAILED", static_cast<long long>(t.failed));
  if (t.max_threads > 0) std::printf(", server threads <= %d", t.max_threads);
  std::printf("\n");
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "Streamed tokens/s a running moe-server sustains: moe-server-load --address HOST:PORT [--api both]");
  if (const std::string dir = absl::GetFlag(FLAGS_model); !dir.empty())
    moe::Print("engine", moe::RunEngine(dir));
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "grpc" && api != "http" && api != "both") {
    std::fprintf(stderr, "--api must be grpc, http or both\n");
    return 2;
  }
  if (const int pid = absl::GetFlag(FLAGS_pid); pid > 0) {
    std::printf("server threads at rest: %d\n", moe::Threads(pid));
  }
  // Rounds alternate the order (gRPC, HTTP, then HTTP, gRPC, ...) so that drift over the run
  // (a warming server, a filling prefix cache) favours neither.
  moe::Totals grpc, http;
  auto add = [](moe::Totals& sum, const moe::Totals& t) {
    sum.seconds += t.seconds, sum.requests += t.requests, sum.tokens += t.tokens, sum.failed += t.failed;
    sum.max_threads = std::max(sum.max_threads, t.max_threads);
  };
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    for (int k = 0; k < 2; ++k) {
      const bool grpc_now = (k == 0) == (round % 2 == 0);
      const int base = (2 * round + k) << 20;
      if (grpc_now && api != "http") {
        const moe::Totals t = moe::RunServer(base);
        moe::Print("gRPC", t);
        add(grpc, t);
      }
      if (!grpc_now && api != "grpc") {
        const moe::Totals t = moe::RunHttp(base);
        moe::Print("HTTP", t);
        add(http, t);
      }
    }
  }
  if (api == "both") {
    moe::Print("gRPC all", grpc);
    moe::Print("HTTP all", http);
    std::printf("HTTP / gRPC tokens/s: %.3f\n", (http.tokens / http.seconds) / (grpc.tokens / grpc.seconds));
  }
  return grpc.failed + http.failed > 0 ? 1 : 0;
}
