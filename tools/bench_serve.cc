// moe-bench: a serving benchmark against a running moe-server, after `vllm bench serve`
// (its flags with underscores, its figures, its result JSON's field names): --num_prompts
// requests arrive as a Poisson process at --request_rate (inf: all at once; --burstiness
// makes the gaps gamma-distributed), at most --max_concurrency at a time, over gRPC or the
// OpenAI HTTP API, streaming; it prints request and token throughput, TTFT, TPOT, ITL and
// E2EL (mean, median, p90, p99), and goodput under --goodput.
//
// For soaks (tools/soak.sh), --duration keeps requests coming for that long, cycling the
// dataset, and clients misbehave on purpose: --cancel_fraction of them cancel at a random
// token, --deadline_fraction send a short --deadline, --stall_fraction stop reading for
// --stall after their first token. Those outcomes are counted apart; any other failure
// makes the exit status 1.
//
//   moe-bench --backend grpc --address 127.0.0.1:50051 --num_prompts 200 --request_rate 8
//   moe-bench --backend openai --base_url http://127.0.0.1:8000 --random_input_len 64
//       --random_output_len 32 --goodput ttft:200,tpot:20 --save_result      (one line)
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "moe/v1/generation.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "runtime/command_line.h"

ABSL_FLAG(std::string, backend, "grpc", "grpc, openai (/v1/completions) or openai-chat (/v1/chat/completions)");
ABSL_FLAG(std::string, address, "127.0.0.1:50051", "gRPC address");
ABSL_FLAG(std::string, base_url, "http://127.0.0.1:8000", "HTTP address of the OpenAI API");
ABSL_FLAG(std::string, model, "", "model name for HTTP (default: the one the server lists)");
ABSL_FLAG(int, num_prompts, 200, "requests to send");
ABSL_FLAG(double, request_rate, INFINITY, "mean requests per second (inf: all at once)");
ABSL_FLAG(double, burstiness, 1.0, "gamma shape of the gaps between requests (1: Poisson)");
ABSL_FLAG(int, max_concurrency, 0, "requests in flight at most (0: no limit)");
ABSL_FLAG(std::string, dataset_name, "random", "random, or jsonl (--dataset_path)");
ABSL_FLAG(std::string, dataset_path, "", "JSONL of {\"prompt\": text, \"output_len\": N} (or \"question\")");
ABSL_FLAG(int, random_input_len, 128, "random dataset: prompt tokens");
ABSL_FLAG(int, random_output_len, 64, "random dataset: new tokens");
ABSL_FLAG(double, random_range_ratio, 0.0, "random dataset: lengths uniform in len * [1 - r, 1 + r]");
ABSL_FLAG(int, random_prefix_len, 0, "random dataset: tokens of a prefix every prompt shares");
ABSL_FLAG(int, vocab, 1000, "random dataset: token ids are drawn from [3, vocab)");
ABSL_FLAG(int, seed, 0, "seed of the dataset and the arrivals");
ABSL_FLAG(bool, ignore_eos, true, "generate the full output length");
ABSL_FLAG(int, num_warmups, 0, "requests sent (and not measured) before the run");
ABSL_FLAG(std::vector<std::string>, goodput, {}, "service-level objectives, e.g. ttft:200,tpot:20 (ms)");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "if > 0, send requests for this long, cycling the dataset (--num_prompts is its size)");
ABSL_FLAG(double, cancel_fraction, 0, "fraction of requests the client cancels at a random token");
ABSL_FLAG(double, deadline_fraction, 0, "fraction of requests sent with --deadline");
ABSL_FLAG(absl::Duration, deadline, absl::Milliseconds(200), "the short deadline of --deadline_fraction");
ABSL_FLAG(double, stall_fraction, 0, "fraction of clients that stop reading for --stall after a token");
ABSL_FLAG(absl::Duration, stall, absl::Seconds(5), "how long a stalled client stops reading");
ABSL_FLAG(bool, save_result, false, "write the result as JSON");
ABSL_FLAG(std::string, result_filename, "", "where --save_result writes (default: moe-bench-<backend>-<rate>.json)");

namespace moe::bench {
namespace {

using json = nlohmann::json;

struct Sample {  // one request of the dataset
  std::vector<int32_t> ids;  // token ids, or
  std::string text;          // text (a JSONL dataset)
  int input_len = 0;
  int output_len = 0;
};

// What a client does with its request: read it to the end, or misbehave on purpose.
enum class Fate { kRead, kCancel, kDeadline, kStall };

struct Plan {
  Fate fate = Fate::kRead;
  int cancel_after = 0;  // kCancel: tokens read before the cancel (0: before the first)
};

struct Outcome {
  Fate fate = Fate::kRead;
  bool ok = false;
  bool as_planned = false;  // not ok, but the cancel or the deadline the plan asked for
  std::string error;
  int output_tokens = 0;
  double ttft = 0, e2el = 0;  // seconds
  std::vector<double> itls;   // seconds between streamed chunks
};

std::vector<Sample> Dataset(std::mt19937& rng, int count) {
  std::vector<Sample> out;
  if (absl::GetFlag(FLAGS_dataset_name) == "jsonl") {
    std::ifstream in(absl::GetFlag(FLAGS_dataset_path));
    for (std::string line; std::getline(in, line) && static_cast<int>(out.size()) < count;) {
      const json j = json::parse(line, nullptr, false);
      if (!j.is_object()) continue;
      Sample s;
      s.text = j.value("prompt", j.value("question", ""));
      s.output_len = j.value("output_len", absl::GetFlag(FLAGS_random_output_len));
      s.input_len = static_cast<int>(s.text.size());  // bytes; the server counts tokens
      if (!s.text.empty()) out.push_back(std::move(s));
    }
    return out;
  }
  const double r = absl::GetFlag(FLAGS_random_range_ratio);
  auto length = [&](int mean) {
    const int lo = std::max(1, static_cast<int>(std::floor(mean * (1 - r))));
    const int hi = std::max(lo, static_cast<int>(std::ceil(mean * (1 + r))));
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  std::uniform_int_distribution<int> token(3, absl::GetFlag(FLAGS_vocab) - 1);
  std::vector<int32_t> prefix(absl::GetFlag(FLAGS_random_prefix_len));
  for (int32_t& t : prefix) t = token(rng);
  for (int i = 0; i < count; ++i) {
    Sample s;
    s.ids = prefix;
    for (int n = length(absl::GetFlag(FLAGS_random_input_len)); n > 0; --n) s.ids.push_back(token(rng));
    s.input_len = static_cast<int>(s.ids.size());
    s.output_len = length(absl::GetFlag(FLAGS_random_output_len));
    out.push_back(std::move(s));
  }
  return out;
}

class Client {
 public:
  Client() {
    const std::string backend = absl::GetFlag(FLAGS_backend);
    if (backend == "grpc") {
      stub_ = v1::Generation::NewStub(
          grpc::CreateChannel(absl::GetFlag(FLAGS_address), grpc::InsecureChannelCredentials()));
    }
    chat_ = backend == "openai-chat";
  }

  Outcome Send(const Sample& s, const Plan& plan = {}) {
    Outcome out = stub_ ? SendGrpc(s, plan) : SendHttp(s, plan);
    out.fate = plan.fate;
    return out;
  }

  absl::Status ResolveModel() {
    if (stub_ || !absl::GetFlag(FLAGS_model).empty()) {
      model_ = absl::GetFlag(FLAGS_model);
      return absl::OkStatus();
    }
    httplib::Client client(absl::GetFlag(FLAGS_base_url));
    const httplib::Result r = client.Get("/v1/models");
    if (!r || r->status != 200) return absl::UnavailableError("cannot list the server's models");
    model_ = json::parse(r->body)["data"][0]["id"];
    return absl::OkStatus();
  }

 private:
  Outcome SendGrpc(const Sample& s, const Plan& plan) {
    v1::GenerateRequest r;
    if (s.ids.empty()) {
      r.set_text(s.text);
    } else {
      r.mutable_token_ids()->mutable_ids()->Add(s.ids.begin(), s.ids.end());
    }
    r.mutable_sampling()->set_temperature(0);
    r.mutable_stopping()->set_max_tokens(s.output_len);
    r.mutable_stopping()->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
    r.mutable_output()->set_return_text(false);
    grpc::ClientContext context;
    Outcome out;
    const absl::Time start = absl::Now();
    if (plan.fate == Fate::kDeadline) context.set_deadline(absl::ToChronoTime(start + absl::GetFlag(FLAGS_deadline)));
    absl::Time last = start;
    auto reader = stub_->Generate(&context, r);
    int tokens = 0;
    bool stalled = false;
    if (plan.fate == Fate::kCancel && plan.cancel_after == 0) context.TryCancel();
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_final()) {
        out.output_tokens = response.final().usage().completion_tokens();
        continue;
      }
      if (response.chunk().token_ids().empty()) continue;
      Chunk(start, &last, &out);
      tokens += response.chunk().token_ids().size();
      if (plan.fate == Fate::kCancel && tokens >= plan.cancel_after) context.TryCancel();
      if (plan.fate == Fate::kStall && !stalled) {  // after the first chunk
        stalled = true;
        absl::SleepFor(absl::GetFlag(FLAGS_stall));
      }
    }
    const grpc::Status status = reader->Finish();
    out.ok = status.ok();
    out.as_planned = (plan.fate == Fate::kCancel && status.error_code() == grpc::StatusCode::CANCELLED) ||
                     (plan.fate == Fate::kDeadline && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
    if (!out.ok) out.error = status.error_message();
    out.e2el = absl::ToDoubleSeconds(absl::Now() - start);
    return out;
  }

  Outcome SendHttp(const Sample& s, const Plan& plan) {
    json body = {{"model", model_},           {"max_tokens", s.output_len},
                 {"temperature", 0},          {"ignore_eos", absl::GetFlag(FLAGS_ignore_eos)},
                 {"stream", true},            {"stream_options", {{"include_usage", true}}}};
    if (chat_) {
      body["messages"] = {{{"role", "user"}, {"content", s.text}}};
    } else if (s.ids.empty()) {
      body["prompt"] = s.text;
    } else {
      body["prompt"] = s.ids;
    }
    httplib::Client client(absl::GetFlag(FLAGS_base_url));
    const absl::Duration deadline = plan.fate == Fate::kDeadline ? absl::GetFlag(FLAGS_deadline) : absl::Seconds(600);
    client.set_read_timeout(absl::ToChronoMicroseconds(deadline));
    httplib::Request req;
    req.method = "POST";
    req.path = chat_ ? "/v1/chat/completions" : "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.body = body.dump();
    Outcome out;
    const absl::Time start = absl::Now();
    absl::Time last = start;
    std::string pending;
    int tokens = 0;
    bool stopped = false;  // by the plan: a cancel, or the deadline
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if ((plan.fate == Fate::kDeadline && absl::Now() - start > deadline) ||
          (plan.fate == Fate::kCancel && tokens >= plan.cancel_after)) {
        return !(stopped = true);
      }
      pending.append(data, n);
      for (size_t end; (end = pending.find("\n\n")) != std::string::npos; pending.erase(0, end + 2)) {
        if (pending.compare(0, 6, "data: ") != 0 || pending.compare(6, 6, "[DONE]") == 0) continue;
        const json chunk = json::parse(pending.substr(6, end - 6), nullptr, false);
        if (chunk.is_discarded()) continue;
        if (chunk.contains("error")) out.error = chunk["error"].value("message", "error event");
        if (chunk.contains("usage") && chunk["usage"].is_object()) {
          out.output_tokens = chunk["usage"]["completion_tokens"];
        }
        if (!chunk.contains("choices") || chunk["choices"].empty()) continue;
        const json& c = chunk["choices"][0];
        const std::string text = chat_ ? (c.contains("delta") && c["delta"].contains("content") &&
                                                  c["delta"]["content"].is_string()
                                              ? c["delta"]["content"].get<std::string>()
                                              : "")
                                       : c.value("text", "");
        if (text.empty()) continue;
        Chunk(start, &last, &out);
        if (++tokens == 1 && plan.fate == Fate::kStall) absl::SleepFor(absl::GetFlag(FLAGS_stall));
        if (plan.fate == Fate::kCancel && tokens >= plan.cancel_after) return !(stopped = true);
      }
      return true;
    };
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    const bool sent = client.send(req, res, error);
    out.e2el = absl::ToDoubleSeconds(absl::Now() - start);
    out.ok = sent && res.status == 200 && out.error.empty();
    // A deadline that passed with nothing to read ends as a read timeout.
    out.as_planned = !sent && (stopped || (plan.fate == Fate::kDeadline && error == httplib::Error::Read));
    if (!sent) out.error = httplib::to_string(error);
    if (sent && res.status != 200) out.error = absl::StrCat("HTTP ", res.status);
    return out;
  }

  // A chunk with tokens arrived: the first sets TTFT, the others add an inter-token latency.
  static void Chunk(absl::Time start, absl::Time* last, Outcome* out) {
    const absl::Time now = absl::Now();
    if (*last == start) {
      out->ttft = absl::ToDoubleSeconds(now - start);
    } else {
      out->itls.push_back(absl::ToDoubleSeconds(now - *last));
    }
    *last = now;
  }

  std::unique_ptr<v1::Generation::Stub> stub_;
  bool chat_ = false;
  std::string model_;
};

struct Stats {
  double mean = 0, median = 0, std = 0, p90 = 0, p99 = 0;
};

Stats Summarize(std::vector<double> xs) {  // seconds in, milliseconds out
  Stats s;
  if (xs.empty()) return s;
  std::sort(xs.begin(), xs.end());
  auto pct = [&](double p) { return 1000 * xs[std::min(xs.size() - 1, static_cast<size_t>(p / 100 * (xs.size() - 1) + 0.5))]; };
  double sum = 0, sq = 0;
  for (double x : xs) sum += x, sq += x * x;
  s.mean = 1000 * sum / xs.size();
  s.std = 1000 * std::sqrt(std::max(0.0, sq / xs.size() - (sum / xs.size()) * (sum / xs.size())));
  s.median = pct(50), s.p90 = pct(90), s.p99 = pct(99);
  return s;
}

}  // namespace
}  // namespace moe::bench

int main(int argc, char** argv) {
  using namespace moe::bench;
  moe::ParseCommandLine(argc, argv, "A serving benchmark, after vllm bench serve: moe-bench --backend grpc|openai|openai-chat ...");
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (backend != "grpc" && backend != "openai" && backend != "openai-chat") {
    std::fprintf(stderr, "moe-bench: --backend must be grpc, openai or openai-chat\n");
    return 2;
  }
  std::map<std::string, double> slo;  // ms
  for (const std::string& g : absl::GetFlag(FLAGS_goodput)) {
    std::vector<std::string> kv = absl::StrSplit(g, ':');
    double ms;
    if (kv.size() != 2 || !absl::SimpleAtod(kv[1], &ms) || (kv[0] != "ttft" && kv[0] != "tpot" && kv[0] != "e2el")) {
      std::fprintf(stderr, "moe-bench: --goodput takes ttft:MS, tpot:MS or e2el:MS, got \"%s\"\n", g.c_str());
      return 2;
    }
    slo[kv[0]] = ms;
  }
  Client client;
  if (absl::Status s = client.ResolveModel(); !s.ok()) {
    std::fprintf(stderr, "moe-bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::mt19937 rng(absl::GetFlag(FLAGS_seed));
  const int n = absl::GetFlag(FLAGS_num_prompts);
  const std::vector<Sample> samples = Dataset(rng, n + absl::GetFlag(FLAGS_num_warmups));
  if (samples.empty()) {
    std::fprintf(stderr, "moe-bench: the dataset is empty\n");
    return 1;
  }
  for (int w = 0; w < absl::GetFlag(FLAGS_num_warmups); ++w) client.Send(samples[n + w < static_cast<int>(samples.size()) ? n + w : 0]);

  const double rate = absl::GetFlag(FLAGS_request_rate), burstiness = absl::GetFlag(FLAGS_burstiness);
  std::gamma_distribution<double> gap(burstiness, rate > 0 && std::isfinite(rate) ? 1.0 / (rate * burstiness) : 0);
  std::uniform_real_distribution<double> unit(0, 1);
  const double cancels = absl::GetFlag(FLAGS_cancel_fraction), deadlines = absl::GetFlag(FLAGS_deadline_fraction),
               stalls = absl::GetFlag(FLAGS_stall_fraction);
  if (cancels < 0 || deadlines < 0 || stalls < 0 || cancels + deadlines + stalls > 1) {
    std::fprintf(stderr, "moe-bench: --cancel_fraction, --deadline_fraction and --stall_fraction must be >= 0 and sum to at most 1\n");
    return 2;
  }
  auto plan = [&](const Sample& s) {
    const double u = unit(rng);
    Plan p;
    if (u < cancels) {
      p.fate = Fate::kCancel;
      p.cancel_after = std::uniform_int_distribution<int>(0, std::max(0, s.output_len - 1))(rng);
    } else if (u < cancels + deadlines) {
      p.fate = Fate::kDeadline;
    } else if (u < cancels + deadlines + stalls) {
      p.fate = Fate::kStall;
    }
    return p;
  };
  const int limit = absl::GetFlag(FLAGS_max_concurrency);
  const absl::Duration soak = absl::GetFlag(FLAGS_duration);
  absl::Mutex mu;
  int inflight = 0;               // guarded by mu
  std::deque<Outcome> outcomes;   // one per request sent; a thread writes its own
  std::vector<size_t> sample_of;  // the sample each request sent
  const absl::Time start = absl::Now();
  absl::Time next = start;
  for (size_t i = 0; soak > absl::ZeroDuration() ? absl::Now() - start < soak : i < samples.size() && static_cast<int>(i) < n; ++i) {
    if (std::isfinite(rate)) {
      next += absl::Seconds(gap(rng));
      absl::SleepFor(next - absl::Now());
    }
    const size_t k = i % std::min<size_t>(n, samples.size());  // the sample this request sends
    const Sample& sample = samples[k];
    absl::MutexLock lock(&mu);
    if (limit > 0) mu.Await(absl::Condition(+[](int* x) { return *x < absl::GetFlag(FLAGS_max_concurrency); }, &inflight));
    ++inflight;
    Outcome* outcome = &outcomes.emplace_back();  // a deque's elements stay where they are
    sample_of.push_back(k);
    std::thread([&client, &mu, &inflight, outcome, s = &sample, p = plan(sample)] {  // detached: gives its stack back when done
      *outcome = client.Send(*s, p);
      absl::MutexLock done(&mu);
      --inflight;
    }).detach();
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(+[](int* x) { return *x == 0; }, &inflight));
  }
  const double duration = absl::ToDoubleSeconds(absl::Now() - start);

  int completed = 0, good = 0, cancelled = 0, expired = 0, stalled = 0;
  int64_t input_tokens = 0, output_tokens = 0;
  std::vector<double> ttfts, tpots, itls, e2els;
  json errors = json::array(), input_lens = json::array(), output_lens = json::array();
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    if (o.as_planned) {
      ++(o.fate == Fate::kCancel ? cancelled : expired);
      continue;
    }
    if (!o.ok) {
      errors.push_back(o.error);
      continue;
    }
    ++completed;
    input_tokens += samples[sample_of[i]].input_len;
    output_tokens += o.output_tokens;
    if (o.fate != Fate::kRead) {  // its latencies are the client's doing
      stalled += o.fate == Fate::kStall;
      continue;
    }
    input_lens.push_back(samples[sample_of[i]].input_len);
    output_lens.push_back(o.output_tokens);
    ttfts.push_back(o.ttft);
    e2els.push_back(o.e2el);
    const double tpot = o.output_tokens > 1 ? (o.e2el - o.ttft) / (o.output_tokens - 1) : 0;
    if (o.output_tokens > 1) tpots.push_back(tpot);
    itls.insert(itls.end(), o.itls.begin(), o.itls.end());
    const bool meets = (!slo.count("ttft") || 1000 * o.ttft <= slo["ttft"]) &&
                       (!slo.count("tpot") || 1000 * tpot <= slo["tpot"]) &&
                       (!slo.count("e2el") || 1000 * o.e2el <= slo["e2el"]);
    good += meets;
  }
  const Stats ttft = Summarize(ttfts), tpot = Summarize(tpots), itl = Summarize(itls), e2el = Summarize(e2els);
  std::printf("============ Serving Benchmark Result ============\n");
  std::printf("%-40s %s\n", "Backend:", backend.c_str());
  std::printf("%-40s %s\n", "Request rate:", std::isfinite(rate) ? absl::StrCat(rate).c_str() : "inf");
  std::printf("%-40s %d\n", "Successful requests:", completed);
  if (cancels + deadlines + stalls > 0) {
    std::printf("%-40s %d\n", "Cancelled by the client:", cancelled);
    std::printf("%-40s %d\n", "Past their short deadline:", expired);
    std::printf("%-40s %d\n", "Stalled readers that completed:", stalled);
  }
  std::printf("%-40s %zu\n", "Failed requests:", errors.size());
  std::printf("%-40s %.2f\n", "Benchmark duration (s):", duration);
  std::printf("%-40s %lld\n", "Total input tokens:", static_cast<long long>(input_tokens));
  std::printf("%-40s %lld\n", "Total generated tokens:", static_cast<long long>(output_tokens));
  std::printf("%-40s %.2f\n", "Request throughput (req/s):", completed / duration);
  if (!slo.empty()) std::printf("%-40s %.2f\n", "Request goodput (req/s):", good / duration);
  std::printf("%-40s %.2f\n", "Output token throughput (tok/s):", output_tokens / duration);
  std::printf("%-40s %.2f\n", "Total Token throughput (tok/s):", (input_tokens + output_tokens) / duration);
  auto section = [](const char* title, const char* name, const Stats& s) {
    std::printf("%s\n", title);
    std::printf("Mean %s (ms): %*s%.2f\n", name, 34 - static_cast<int>(strlen(name)), "", s.mean);
    std::printf("Median %s (ms): %*s%.2f\n", name, 32 - static_cast<int>(strlen(name)), "", s.median);
    std::printf("P90 %s (ms): %*s%.2f\n", name, 35 - static_cast<int>(strlen(name)), "", s.p90);
    std::printf("P99 %s (ms): %*s%.2f\n", name, 35 - static_cast<int>(strlen(name)), "", s.p99);
  };
  section("---------------Time to First Token----------------", "TTFT", ttft);
  section("-----Time per Output Token (excl. 1st token)------", "TPOT", tpot);
  section("---------------Inter-token Latency----------------", "ITL", itl);
  section("----------------End-to-end Latency----------------", "E2EL", e2el);
  std::printf("==================================================\n");
  for (size_t i = 0; i < std::min<size_t>(errors.size(), 3); ++i) {
    std::fprintf(stderr, "moe-bench: a request failed: %s\n", errors[i].get<std::string>().c_str());
  }

  if (absl::GetFlag(FLAGS_save_result)) {
    json r = {{"date", absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone())},
              {"backend", backend},
              {"model_id", absl::GetFlag(FLAGS_model)},
              {"num_prompts", n},
              {"request_rate", std::isfinite(rate) ? json(rate) : json("inf")},
              {"burstiness", burstiness},
              {"max_concurrency", limit > 0 ? json(limit) : json(nullptr)},
              {"duration", duration},
              {"completed", completed},
              {"cancelled", cancelled},
              {"deadline_exceeded", expired},
              {"stalled_completed", stalled},
              {"total_input_tokens", input_tokens},
              {"total_output_tokens", output_tokens},
              {"request_throughput", completed / duration},
              {"request_goodput", slo.empty() ? json(nullptr) : json(good / duration)},
              {"output_throughput", output_tokens / duration},
              {"total_token_throughput", (input_tokens + output_tokens) / duration},
              {"input_lens", input_lens},
              {"output_lens", output_lens},
              {"ttfts", ttfts},
              {"itls", itls},
              {"errors", errors}};
    for (const auto& [name, s] : {std::pair{"ttft", ttft}, {"tpot", tpot}, {"itl", itl}, {"e2el", e2el}}) {
      r[absl::StrCat("mean_", name, "_ms")] = s.mean;
      r[absl::StrCat("median_", name, "_ms")] = s.median;
      r[absl::StrCat("std_", name, "_ms")] = s.std;
      r[absl::StrCat("p90_", name, "_ms")] = s.p90;
      r[absl::StrCat("p99_", name, "_ms")] = s.p99;
    }
    std::string path = absl::GetFlag(FLAGS_result_filename);
    if (path.empty()) path = absl::StrCat("moe-bench-", backend, "-", std::isfinite(rate) ? absl::StrCat(rate) : "inf", ".json");
    std::ofstream(path) << r.dump(1) << "\n";
    std::printf("result written to %s\n", path.c_str());
  }
  return errors.empty() ? 0 : 1;
}
