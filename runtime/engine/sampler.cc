#include "runtime/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "runtime/engine/philox.h"

namespace moe {
namespace {

SampledLogprobs RawLogprobs(absl::Span<const float> logits, int32_t chosen, int top_n) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(double{l} - max_logit);
  const float log_z = max_logit + static_cast<float>(std::log(sum));
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
  if (out.token >= 0 && p.logprobs >= 0) out.logprobs = RawLogprobs(in.logits, out.token, p.logprobs);
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
