// Metrics: the server's Prometheus metrics, rendered in the text exposition format for the
// HTTP /metrics endpoint, plus the recent generation rate that GetLoad reports.
//
// Counters and histograms are fed from output sinks on the engine thread (one short lock per
// call); gauges (running, waiting, KV usage) and routed tokens per expert are read from the
// engine when rendered.
//
//   metrics.OnTokens(1, /*inter_token_s=*/0.004);
//   metrics.OnFinished(final, /*count_prompt=*/true);
//   std::string body = metrics.Render(engine.GetStats(), model.RoutedTokensPerExpert(), streams);
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/output.h"

namespace moe::server {

// A cumulative histogram over fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)), counts_(bounds_.size()) {}
  void Observe(double value);
  // Appends the _bucket, _sum and _count lines of `name`.
  void Render(const std::string& name, std::string* out) const;
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // [bounds] not cumulative; summed when rendered
  int64_t count_ = 0;
  double sum_ = 0;
};

// Events per second over a sliding window of whole seconds.
class RateMeter {
 public:
  static constexpr int kWindowSeconds = 10;
  void Add(int64_t n, absl::Time now);
  double PerSecond(absl::Time now) const;

 private:
  std::array<int64_t, kWindowSeconds> buckets_{};
  std::array<int64_t, kWindowSeconds> bucket_second_{};  // which second each bucket holds
  absl::Time start_ = absl::Now();
};

class Metrics {
 public:
  Metrics();

  // `n` tokens streamed; `inter_token_s` is the gap since the choice's previous tokens (< 0:
  // these are its first).
  void OnTokens(int n, double inter_token_s);
  // One choice finished. Prompt tokens count once per request: pass count_prompt for choice 0.
  void OnFinished(const FinalOutput& final, bool count_prompt);
  // A request refused before it reached the engine, by gRPC status code name.
  void OnRejected(const std::string& code);

  double TokensPerSecond() const;
  std::string Render(const EngineStats& stats, const std::vector<int64_t>& routed_per_expert,
                     int active_streams) const;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, int64_t> finished_ ABSL_GUARDED_BY(mu_);  // by finish reason
  std::map<std::string, int64_t> rejected_ ABSL_GUARDED_BY(mu_);  // by status code
  int64_t prompt_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generation_tokens_ ABSL_GUARDED_BY(mu_) = 0;
  Histogram time_to_first_token_ ABSL_GUARDED_BY(mu_);
  Histogram inter_token_latency_ ABSL_GUARDED_BY(mu_);
  Histogram end_to_end_ ABSL_GUARDED_BY(mu_);
  Histogram queue_time_ ABSL_GUARDED_BY(mu_);
  RateMeter token_rate_ ABSL_GUARDED_BY(mu_);
};

}  // namespace moe::server
