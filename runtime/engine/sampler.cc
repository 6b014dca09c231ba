#include "runtime/engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <numeric>

#include "runtime/engine/philox.h"

namespace moe {
namespace {

// Lanes of the vectorized reductions below: wide enough for AVX-512, split so that the
// compiler vectorizes them without reassociating a single sum (no -ffast-math needed).
constexpr int kLanes = 16;

// e^x for x <= 0 to about 2e-7 relative (x below -87 gives about 1e-38, not 0): 2^(x log2 e)
// as 2^floor times a degree-6 polynomial of the fraction. Branch-free, so loops vectorize.
inline float ExpNonPositive(float x) {
  const float t = std::max(x, -87.0f) * 1.44269504f;
  const float whole = std::floor(t);
  const float f = t - whole;  // [0, 1)
  float p = 1.535336188e-4f;
  p = p * f + 1.339887440e-3f;
  p = p * f + 9.618437357e-3f;
  p = p * f + 5.550332471e-2f;
  p = p * f + 2.402264791e-1f;
  p = p * f + 6.931472028e-1f;
  p = p * f + 1.0f;
  return p * std::bit_cast<float>((static_cast<int32_t>(whole) + 127) << 23);
}

}  // namespace

float LogSumExp(absl::Span<const float> logits) {
  const size_t n = logits.size();
  const float* x = logits.data();
  float lane_max[kLanes];
  std::fill(lane_max, lane_max + kLanes, -INFINITY);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) lane_max[k] = x[i + k] > lane_max[k] ? x[i + k] : lane_max[k];
  }
  float max_logit = *std::max_element(lane_max, lane_max + kLanes);
  for (; i < n; ++i) max_logit = x[i] > max_logit ? x[i] : max_logit;
  if (!std::isfinite(max_logit)) return max_logit;  // every logit -inf (or NaN), or a +inf
  // Float lanes over blocks of 1024, each block's sum added in double.
  constexpr size_t kBlock = 1024;
  double sum = 0;
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t end = std::min(n, start + kBlock);
    float lane_sum[kLanes] = {};
    size_t j = start;
    for (; j + kLanes <= end; j += kLanes) {
      for (int k = 0; k < kLanes; ++k) lane_sum[k] += ExpNonPositive(x[j + k] - max_logit);
    }
    float block = 0;
    for (; j < end; ++j) block += ExpNonPositive(x[j] - max_logit);
    for (int k = 0; k < kLanes; ++k) block += lane_sum[k];
    sum += block;
  }
  return max_logit + static_cast<float>(std::log(sum));
}

namespace {

SampledLogprobs RawLogprobs(absl::Span<const float> logits, float log_z, int32_t chosen, int top_n) {
  SampledLogprobs out{.chosen = {chosen, logits[chosen] - log_z}};
  if (top_n > 0) {
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    const int n = std::min<int>(top_n, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int i = 0; i < n; ++i) out.top.push_back({ids[i], logits[ids[i]] - log_z});
  }
  return out;
}

// The largest logit, the lowest id among equals; NaNs are skipped. -1 when every logit is
// NaN or -inf: nothing can be chosen, and the engine ends the sequence with an error.
int32_t ArgMax(absl::Span<const float> logits) {
  int32_t best = -1;
  float best_logit = -INFINITY;
  for (size_t t = 0; t < logits.size(); ++t) {
    if (logits[t] > best_logit) {  // false for NaN, and for -inf
      best_logit = logits[t];
      best = static_cast<int32_t>(t);
    }
  }
  return best;
}

}  // namespace

Sampled Sampler::Sample(const SampleInput& in) {
  const SamplingParams& p = *in.params;
  const bool unprocessed = in.masked_tokens.empty() && p.logit_bias.empty() &&
                           p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
                           p.frequency_penalty == 0.0f;
  Sampled out;
  if (p.greedy() && unprocessed) {
    out.token = ArgMax(in.logits);  // the common case needs no copy
  } else {
    logits_.assign(in.logits.begin(), in.logits.end());
    ApplyPenaltiesAndBias(in);
    out.token = p.greedy() ? ArgMax(logits_) : Draw(in);
  }
  if (out.token < 0) return out;
  // Always: every choice's confidence is made of these (see Confidence in output.h).
  const float log_z = LogSumExp(in.logits);
  out.logprob = in.logits[out.token] - log_z;
  if (p.logprobs >= 0) out.logprobs = RawLogprobs(in.logits, log_z, out.token, p.logprobs);
  return out;
}

void Sampler::ApplyPenaltiesAndBias(const SampleInput& in) {
  const SamplingParams& p = *in.params;
  const int64_t V = logits_.size();
  for (int32_t t : in.masked_tokens) {
    if (t >= 0 && t < V) logits_[t] = -INFINITY;
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token >= 0 && token < V) logits_[token] += bias;
  }
  if (p.repetition_penalty != 1.0f) {
    auto penalize = [&](int32_t t) {
      float& l = logits_[t];
      l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    };
    // Each distinct token once, whether it appears in the prompt, the output or both.
    counts_.assign(V, 0);
    for (int32_t t : in.prompt) counts_[t] = 1;
    for (int32_t t : in.output) counts_[t] = 1;
    for (int64_t t = 0; t < V; ++t) {
      if (counts_[t]) penalize(static_cast<int32_t>(t));
    }
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    counts_.assign(V, 0);
    for (int32_t t : in.output) ++counts_[t];
    for (int32_t t : in.output) {
      if (counts_[t] == 0) continue;  // already applied
      logits_[t] -= p.frequency_penalty * counts_[t] + p.presence_penalty;
      counts_[t] = 0;
    }
  }
}

// Keeps the most likely candidates whose mass first reaches top_p of the total. Sorts only
// as many as needed: the head grows 4x at a time until it holds the nucleus.
void Sampler::KeepNucleus(float top_p, const std::vector<float>& probs) {
  auto by_prob = [&](int32_t a, int32_t b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); };
  double total = 0;
  for (int32_t t : order_) total += probs[t];
  const double target = top_p * total;
  for (size_t head = 256;; head *= 4) {
    head = std::min(head, order_.size());
    std::partial_sort(order_.begin(), order_.begin() + head, order_.end(), by_prob);
    double cumulative = 0;
    size_t keep = 0;
    while (keep < head && cumulative < target) cumulative += probs[order_[keep++]];
    if (cumulative >= target || head == order_.size()) {
      order_.resize(std::max<size_t>(keep, 1));
      return;
    }
  }
}

int32_t Sampler::Draw(const SampleInput& in) {
  const SamplingParams& p = *in.params;
  const int64_t V = logits_.size();
  // Probabilities after temperature, unnormalized, relative to the max. A +inf logit takes
  // all the mass (the first one if several); NaNs get none.
  const int32_t best = ArgMax(logits_);
  if (best < 0 || logits_[best] == INFINITY) return best;
  const float max_logit = logits_[best];
  std::vector<float>& probs = logits_;
  for (float& l : probs) l = std::exp((l - max_logit) / p.temperature);

  order_.clear();
  const float min_prob = p.min_p;  // relative to the most likely token, whose weight is exp(0) = 1
  for (int64_t t = 0; t < V; ++t) {
    if (probs[t] > 0 && probs[t] >= min_prob) order_.push_back(static_cast<int32_t>(t));
  }
  auto by_prob = [&](int32_t a, int32_t b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); };
  if (p.top_k > 0 && p.top_k < static_cast<int>(order_.size())) {
    std::nth_element(order_.begin(), order_.begin() + p.top_k - 1, order_.end(), by_prob);
    const float kth = probs[order_[p.top_k - 1]];
    order_.erase(std::remove_if(order_.begin(), order_.end(), [&](int32_t t) { return probs[t] < kth; }),
                 order_.end());
  }
  if (p.top_p < 1.0f) KeepNucleus(p.top_p, probs);
  if (order_.empty()) return best;  // min_p and the others always keep the most likely
  std::sort(order_.begin(), order_.end());  // the draw walks token ids in order
  double total = 0;
  for (int32_t t : order_) total += probs[t];
  const double u = PhiloxUniform(in.seed, in.output.size(), static_cast<uint32_t>(in.choice)) * total;
  double cumulative = 0;
  for (int32_t t : order_) {
    cumulative += probs[t];
    if (u < cumulative) return t;
  }
  return order_.back();
}

}  // namespace moe
