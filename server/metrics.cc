// Metrics (see metrics.h). Names follow Prometheus conventions: seconds, _total counters.
#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe::server {
namespace {

// Latency buckets in seconds, from a fast CPU decode step to a long generation.
std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.25,  0.5,
          0.75,  1.0,    2.5,   5.0,  10.0,  20.0, 40.0,  80.0, 160.0, 640.0};
}

// Exact for counts up to 2^53 (%.17g would print 0.1 as 0.10000000000000001).
std::string Number(double v) {
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    return absl::StrFormat("%d", static_cast<int64_t>(v));
  }
  return absl::StrFormat("%.9g", v);
}

void Header(const std::string& name, const std::string& type, const std::string& help,
            std::string* out) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

void Sample(const std::string& name, double value, std::string* out) {
  absl::StrAppend(out, name, " ", Number(value), "\n");
}

// Expert parallelism: each rank's share, labelled by rank, and one imbalance gauge.
void RenderRanks(const std::vector<RankLoad>& ranks, std::string* out) {
  struct PerRank {
    const char* name;
    const char* type;
    const char* help;
    double (*value)(const RankLoad&);
  };
  const PerRank series[] = {
      {"moe_rank_requests_running", "gauge", "Sequences running on each rank.",
       [](const RankLoad& r) { return double(r.running); }},
      {"moe_rank_requests_waiting", "gauge", "Sequences waiting on each rank.",
       [](const RankLoad& r) { return double(r.waiting); }},
      {"moe_rank_kv_cache_usage_ratio", "gauge", "Fraction of each rank's KV cache blocks in use.",
       [](const RankLoad& r) { return r.total_blocks > 0 ? 1.0 - double(r.free_blocks) / r.total_blocks : 0.0; }},
      {"moe_rank_steps_total", "counter", "Steps each rank took part in, idle ones included.",
       [](const RankLoad& r) { return double(r.steps); }},
      {"moe_rank_expert_rows_sent_total", "counter", "Routed rows each rank sent to other ranks' experts.",
       [](const RankLoad& r) { return double(r.expert_rows_sent); }},
      {"moe_rank_expert_rows_received_total", "counter", "Routed rows each rank received for its experts.",
       [](const RankLoad& r) { return double(r.expert_rows_received); }}};
  for (const PerRank& s : series) {
    Header(s.name, s.type, s.help, out);
    for (size_t r = 0; r < ranks.size(); ++r) {
      absl::StrAppend(out, s.name, "{rank=\"", r, "\"} ", Number(s.value(ranks[r])), "\n");
    }
  }
  Header("moe_rank_load_imbalance", "gauge",
         "Sequences on the busiest rank over the mean per rank (1 = balanced).", out);
  Sample("moe_rank_load_imbalance", LoadImbalance(ranks), out);
}

}  // namespace

void Histogram::Observe(double value) {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  if (it != bounds_.end()) ++counts_[it - bounds_.begin()];
  ++count_;
  sum_ += value;
}

void Histogram::Render(const std::string& name, std::string* out) const {
  int64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    absl::StrAppend(out, name, "_bucket{le=\"", Number(bounds_[i]), "\"} ", cumulative, "\n");
  }
  absl::StrAppend(out, name, "_bucket{le=\"+Inf\"} ", count_, "\n");
  absl::StrAppend(out, name, "_sum ", Number(sum_), "\n", name, "_count ", count_, "\n");
}

void RateMeter::Add(int64_t n, absl::Time now) {
  const int64_t second = absl::ToUnixSeconds(now);
  const int slot = static_cast<int>(second % kWindowSeconds);
  if (bucket_second_[slot] != second) {
    bucket_second_[slot] = second;
    buckets_[slot] = 0;
  }
  buckets_[slot] += n;
}

double RateMeter::PerSecond(absl::Time now) const {
  const int64_t second = absl::ToUnixSeconds(now);
  int64_t total = 0;
  for (int i = 0; i < kWindowSeconds; ++i) {
    if (second - bucket_second_[i] < kWindowSeconds) total += buckets_[i];
  }
  // The window is shorter just after start; the current second counts as a whole one.
  const double window =
      std::clamp(absl::ToDoubleSeconds(now - start_), 1.0, static_cast<double>(kWindowSeconds));
  return total / window;
}

Metrics::Metrics()
    : time_to_first_token_(LatencyBuckets()),
      inter_token_latency_(LatencyBuckets()),
      end_to_end_(LatencyBuckets()),
      queue_time_(LatencyBuckets()) {}

void Metrics::OnTokens(int n, double inter_token_s) {
  absl::MutexLock lock(&mu_);
  generation_tokens_ += n;
  token_rate_.Add(n, absl::Now());
  if (inter_token_s >= 0) inter_token_latency_.Observe(inter_token_s);
}

void Metrics::OnFinished(const FinalOutput& final, bool count_prompt) {
  absl::MutexLock lock(&mu_);
  ++finished_[FinishReasonName(final.reason)];
  if (count_prompt) prompt_tokens_ += final.usage.prompt_tokens;
  if (final.usage.completion_tokens > 0) {
    time_to_first_token_.Observe(absl::ToDoubleSeconds(final.timings.time_to_first_token));
  }
  end_to_end_.Observe(absl::ToDoubleSeconds(final.timings.end_to_end));
  // The engine stamps the step's start as the first schedule, which can precede arrival.
  queue_time_.Observe(std::max(0.0, absl::ToDoubleSeconds(final.timings.queue)));
}

void Metrics::OnRejected(const std::string& code) {
  absl::MutexLock lock(&mu_);
  ++rejected_[code];
}

double Metrics::TokensPerSecond() const {
  absl::MutexLock lock(&mu_);
  return token_rate_.PerSecond(absl::Now());
}

std::string Metrics::Render(const EngineStats& stats, const std::vector<int64_t>& routed_per_expert,
                            int active_streams) const {
  std::string out;
  absl::MutexLock lock(&mu_);
  Header("moe_requests_finished_total", "counter", "Choices finished, by finish reason.", &out);
  for (const char* reason :
       {"eos", "stop_string", "stop_token", "length", "time_limit", "aborted", "error"}) {
    auto it = finished_.find(reason);
    absl::StrAppend(&out, "moe_requests_finished_total{reason=\"", reason, "\"} ",
                    it == finished_.end() ? 0 : it->second, "\n");
  }
  Header("moe_requests_rejected_total", "counter", "Requests refused before the engine, by status.",
         &out);
  for (const auto& [code, n] : rejected_) {
    absl::StrAppend(&out, "moe_requests_rejected_total{code=\"", code, "\"} ", n, "\n");
  }
  Header("moe_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", &out);
  Sample("moe_prompt_tokens_total", prompt_tokens_, &out);
  Header("moe_generation_tokens_total", "counter", "Tokens generated and streamed.", &out);
  Sample("moe_generation_tokens_total", generation_tokens_, &out);
  struct Named {
    const char* name;
    const char* help;
    const Histogram* histogram;
  };
  const Named histograms[] = {
      {"moe_time_to_first_token_seconds", "Arrival to first token.", &time_to_first_token_},
      {"moe_inter_token_latency_seconds", "Gap between a choice's deltas.", &inter_token_latency_},
      {"moe_e2e_request_latency_seconds", "Arrival to finish.", &end_to_end_},
      {"moe_request_queue_time_seconds", "Arrival to first scheduled.", &queue_time_}};
  for (const auto& [name, help, histogram] : histograms) {
    Header(name, "histogram", help, &out);
    histogram->Render(name, &out);
  }
  Header("moe_requests_running", "gauge", "Sequences in the running batch.", &out);
  Sample("moe_requests_running", stats.running, &out);
  Header("moe_requests_waiting", "gauge", "Sequences waiting to be scheduled.", &out);
  Sample("moe_requests_waiting", stats.waiting, &out);
  Header("moe_kv_cache_usage_ratio", "gauge", "Fraction of KV cache blocks in use.", &out);
  Sample("moe_kv_cache_usage_ratio",
         stats.total_blocks > 0 ? 1.0 - double(stats.free_blocks) / stats.total_blocks : 0.0, &out);
  Header("moe_kv_cache_blocks_used", "gauge", "KV cache blocks held by sequences.", &out);
  Sample("moe_kv_cache_blocks_used", stats.total_blocks - stats.free_blocks, &out);
  Header("moe_kv_cache_blocks_total", "gauge", "KV cache blocks in all.", &out);
  Sample("moe_kv_cache_blocks_total", stats.total_blocks, &out);
  Header("moe_active_streams", "gauge", "Generate streams open.", &out);
  Sample("moe_active_streams", active_streams, &out);
  Header("moe_routed_tokens_total", "counter", "Tokens routed to each expert, summed over layers.",
         &out);
  for (size_t e = 0; e < routed_per_expert.size(); ++e) {
    absl::StrAppend(&out, "moe_routed_tokens_total{expert=\"", e, "\"} ", routed_per_expert[e],
                    "\n");
  }
  if (!stats.ranks.empty()) RenderRanks(stats.ranks, &out);
  return out;
}

}  // namespace moe::server
