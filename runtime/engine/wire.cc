#include "runtime/engine/wire.h"

#include "runtime/status_macros.h"

namespace moe {
namespace {

// Durations and times as int64 nanoseconds, with the infinities as the int64 extremes.
constexpr int64_t kInfinite = INT64_MAX, kMinusInfinite = INT64_MIN;

int64_t DurationBits(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return kInfinite;
  if (d == -absl::InfiniteDuration()) return kMinusInfinite;
  return absl::ToInt64Nanoseconds(d);
}

absl::Duration BitsDuration(int64_t n) {
  if (n == kInfinite) return absl::InfiniteDuration();
  if (n == kMinusInfinite) return -absl::InfiniteDuration();
  return absl::Nanoseconds(n);
}

}  // namespace

void WireWriter::Put(absl::Duration d) { Put<int64_t>(DurationBits(d)); }
void WireWriter::Put(absl::Time t) {
  Put<int64_t>(t == absl::InfiniteFuture()  ? kInfinite
               : t == absl::InfinitePast() ? kMinusInfinite
                                           : absl::ToUnixNanos(t));
}

absl::StatusOr<std::string> WireReader::GetString() {
  ASSIGN_OR_RETURN(const uint64_t n, Get<uint64_t>());
  if (n > rest_.size()) return Truncated();
  std::string s(rest_.substr(0, n));
  rest_.remove_prefix(n);
  return s;
}

absl::StatusOr<absl::Duration> WireReader::GetDuration() {
  ASSIGN_OR_RETURN(const int64_t n, Get<int64_t>());
  return BitsDuration(n);
}

absl::StatusOr<absl::Time> WireReader::GetTime() {
  ASSIGN_OR_RETURN(const int64_t n, Get<int64_t>());
  if (n == kInfinite) return absl::InfiniteFuture();
  if (n == kMinusInfinite) return absl::InfinitePast();
  return absl::FromUnixNanos(n);
}

void PutRequest(WireWriter& w, const Request& q) {
  w.Put(q.id);
  w.Put(q.prompt);
  const SamplingParams& s = q.sampling;
  w.Put(s.temperature), w.Put(s.top_k), w.Put(s.top_p), w.Put(s.min_p);
  w.Put(s.repetition_penalty), w.Put(s.presence_penalty), w.Put(s.frequency_penalty);
  w.Put<uint64_t>(s.logit_bias.size());
  for (const auto& [token, bias] : s.logit_bias) w.Put(token), w.Put(bias);
  w.Put<uint8_t>(s.seed.has_value());
  w.Put<uint64_t>(s.seed.value_or(0));
  w.Put(s.logprobs), w.Put(s.n);
  const StoppingParams& t = q.stopping;
  w.Put(t.max_tokens), w.Put(t.min_tokens);
  w.Put(t.stop_token_ids);
  w.Put<uint64_t>(t.stop_strings.size());
  for (const std::string& stop : t.stop_strings) w.Put(stop);
  w.Put<uint8_t>(t.include_stop_string), w.Put<uint8_t>(t.ignore_eos);
  w.Put(t.time_limit);
  w.Put(q.priority);
  w.Put(q.cache_salt);
  w.Put<uint8_t>(q.skip_special_tokens);
}

absl::StatusOr<Request> GetRequest(WireReader& r) {
  Request q;
  ASSIGN_OR_RETURN(q.id, r.GetString());
  ASSIGN_OR_RETURN(q.prompt, r.GetVector<int32_t>());
  SamplingParams& s = q.sampling;
  ASSIGN_OR_RETURN(s.temperature, r.Get<float>());
  ASSIGN_OR_RETURN(s.top_k, r.Get<int>());
  ASSIGN_OR_RETURN(s.top_p, r.Get<float>());
  ASSIGN_OR_RETURN(s.min_p, r.Get<float>());
  ASSIGN_OR_RETURN(s.repetition_penalty, r.Get<float>());
  ASSIGN_OR_RETURN(s.presence_penalty, r.Get<float>());
  ASSIGN_OR_RETURN(s.frequency_penalty, r.Get<float>());
  ASSIGN_OR_RETURN(const uint64_t biases, r.Get<uint64_t>());
  for (uint64_t i = 0; i < biases; ++i) {
    ASSIGN_OR_RETURN(const int32_t token, r.Get<int32_t>());
    ASSIGN_OR_RETURN(const float bias, r.Get<float>());
    s.logit_bias.emplace_back(token, bias);
  }
  ASSIGN_OR_RETURN(const uint8_t has_seed, r.Get<uint8_t>());
  ASSIGN_OR_RETURN(const uint64_t seed, r.Get<uint64_t>());
  if (has_seed) s.seed = seed;
  ASSIGN_OR_RETURN(s.logprobs, r.Get<int>());
  ASSIGN_OR_RETURN(s.n, r.Get<int>());
  StoppingParams& t = q.stopping;
  ASSIGN_OR_RETURN(t.max_tokens, r.Get<int>());
  ASSIGN_OR_RETURN(t.min_tokens, r.Get<int>());
  ASSIGN_OR_RETURN(t.stop_token_ids, r.GetVector<int32_t>());
  ASSIGN_OR_RETURN(const uint64_t stops, r.Get<uint64_t>());
  for (uint64_t i = 0; i < stops; ++i) {
    ASSIGN_OR_RETURN(std::string stop, r.GetString());
    t.stop_strings.push_back(std::move(stop));
  }
  ASSIGN_OR_RETURN(const uint8_t include_stop, r.Get<uint8_t>());
  ASSIGN_OR_RETURN(const uint8_t ignore_eos, r.Get<uint8_t>());
  t.include_stop_string = include_stop, t.ignore_eos = ignore_eos;
  ASSIGN_OR_RETURN(t.time_limit, r.GetDuration());
  ASSIGN_OR_RETURN(q.priority, r.Get<int>());
  ASSIGN_OR_RETURN(q.cache_salt, r.GetString());
  ASSIGN_OR_RETURN(const uint8_t skip_special, r.Get<uint8_t>());
  q.skip_special_tokens = skip_special;
  return q;
}

void PutDelta(WireWriter& w, const OutputDelta& d) {
  w.Put(d.choice);
  w.Put(d.token_ids);
  w.Put(d.text);
  w.Put<uint64_t>(d.logprobs.size());
  for (const SampledLogprobs& l : d.logprobs) {
    w.Put(l.chosen.token), w.Put(l.chosen.logprob);
    w.Put<uint64_t>(l.top.size());
    for (const TokenLogprob& t : l.top) w.Put(t.token), w.Put(t.logprob);
  }
}

absl::StatusOr<OutputDelta> GetDelta(WireReader& r) {
  OutputDelta d;
  ASSIGN_OR_RETURN(d.choice, r.Get<int>());
  ASSIGN_OR_RETURN(d.token_ids, r.GetVector<int32_t>());
  ASSIGN_OR_RETURN(d.text, r.GetString());
  ASSIGN_OR_RETURN(const uint64_t n, r.Get<uint64_t>());
  for (uint64_t i = 0; i < n; ++i) {
    SampledLogprobs l;
    ASSIGN_OR_RETURN(l.chosen.token, r.Get<int32_t>());
    ASSIGN_OR_RETURN(l.chosen.logprob, r.Get<float>());
    ASSIGN_OR_RETURN(const uint64_t top, r.Get<uint64_t>());
    for (uint64_t j = 0; j < top; ++j) {
      TokenLogprob t;
      ASSIGN_OR_RETURN(t.token, r.Get<int32_t>());
      ASSIGN_OR_RETURN(t.logprob, r.Get<float>());
      l.top.push_back(t);
    }
    d.logprobs.push_back(std::move(l));
  }
  return d;
}

void PutFinal(WireWriter& w, const FinalOutput& f) {
  w.Put(f.choice);
  w.Put(static_cast<int32_t>(f.reason));
  w.Put(f.matched_stop);
  w.Put(f.usage.prompt_tokens), w.Put(f.usage.completion_tokens), w.Put(f.usage.cached_tokens);
  w.Put(f.timings.queue), w.Put(f.timings.time_to_first_token), w.Put(f.timings.end_to_end);
  w.Put(f.confidence.tokens), w.Put(f.confidence.mean_logprob), w.Put(f.confidence.min_logprob);
  w.Put(static_cast<int32_t>(f.error.code()));
  w.Put(std::string_view(f.error.message().data(), f.error.message().size()));
}

absl::StatusOr<FinalOutput> GetFinal(WireReader& r) {
  FinalOutput f;
  ASSIGN_OR_RETURN(f.choice, r.Get<int>());
  ASSIGN_OR_RETURN(const int32_t reason, r.Get<int32_t>());
  if (reason < 0 || reason > static_cast<int32_t>(FinishReason::kError)) {
    return absl::DataLossError("relay message: unknown finish reason");
  }
  f.reason = static_cast<FinishReason>(reason);
  ASSIGN_OR_RETURN(f.matched_stop, r.GetString());
  ASSIGN_OR_RETURN(f.usage.prompt_tokens, r.Get<int>());
  ASSIGN_OR_RETURN(f.usage.completion_tokens, r.Get<int>());
  ASSIGN_OR_RETURN(f.usage.cached_tokens, r.Get<int>());
  ASSIGN_OR_RETURN(f.timings.queue, r.GetDuration());
  ASSIGN_OR_RETURN(f.timings.time_to_first_token, r.GetDuration());
  ASSIGN_OR_RETURN(f.timings.end_to_end, r.GetDuration());
  ASSIGN_OR_RETURN(f.confidence.tokens, r.Get<int>());
  ASSIGN_OR_RETURN(f.confidence.mean_logprob, r.Get<double>());
  ASSIGN_OR_RETURN(f.confidence.min_logprob, r.Get<float>());
  ASSIGN_OR_RETURN(const int32_t code, r.Get<int32_t>());
  ASSIGN_OR_RETURN(std::string message, r.GetString());
  f.error = absl::Status(static_cast<absl::StatusCode>(code), message);
  return f;
}

}  // namespace moe
