#include "runtime/engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>

#include "runtime/engine/philox.h"

namespace moe {
namespace {

// e^x for x <= 0 to about 2e-7 relative (x below -87 gives about 1e-38, not 0): 2^(x log2 e)
// as 2^floor times a degree-6 polynomial of the fraction. Written once over a vector of 8
// floats (GCC/Clang vector extensions: AVX2 or better with -march=native, else SSE pairs);
// the scalar tail uses lane 0. GCC 12 does not vectorize the scalar form by itself.
using Floats8 = float __attribute__((vector_size(32)));
using Ints8 = int32_t __attribute__((vector_size(32)));

inline Floats8 ExpNonPositive(Floats8 x) {
  const Floats8 lowest = Floats8{} - 87.0f;
  x = x > lowest ? x : lowest;
  const Floats8 t = x * 1.44269504f;
  Ints8 whole = __builtin_convertvector(t, Ints8);      // truncates toward 0 ...
  whole += __builtin_convertvector(whole, Floats8) > t;  // ... so -1 where t is not whole: floor
  const Floats8 f = t - __builtin_convertvector(whole, Floats8);  // [0, 1)
  Floats8 p = Floats8{} + 1.535336188e-4f;
  p = p * f + 1.339887440e-3f;
  p = p * f + 9.618437357e-3f;
  p = p * f + 5.550332471e-2f;
  p = p * f + 2.402264791e-1f;
  p = p * f + 6.931472028e-1f;
  p = p * f + 1.0f;
  return p * std::bit_cast<Floats8>((whole + 127) << 23);
}

inline Floats8 Load8(const float* x) {
  Floats8 v;
  std::memcpy(&v, x, sizeof(v));
  return v;
}

}  // namespace

float LogSumExp(absl::Span<const float> logits) {
  const size_t n = logits.size();
  const float* x = logits.data();
  constexpr size_t kWidth = 8;
  const size_t vectors_end = n - n % kWidth;
  Floats8 lane_max = Floats8{} - INFINITY;
  for (size_t i = 0; i < vectors_end; i += kWidth) {
    const Floats8 v = Load8(x + i);
    lane_max = v > lane_max ? v : lane_max;  // NaNs are skipped
  }
  float max_logit = -INFINITY;
  for (size_t k = 0; k < kWidth; ++k) max_logit = lane_max[k] > max_logit ? lane_max[k] : max_logit;
  for (size_t i = vectors_end; i < n; ++i) max_logit = x[i] > max_logit ? x[i] : max_logit;
  if (!std::isfinite(max_logit)) return max_logit;  // every logit -inf (or NaN), or a +inf
  // Float lanes over blocks of 1024, each block's sum added in double.
  constexpr size_t kBlock = 1024;
  double sum = 0;
  for (size_t start = 0; start < vectors_end; start += kBlock) {
    const size_t end = std::min(vectors_end, start + kBlock);
    Floats8 lanes{};
    for (size_t i = start; i < end; i += kWidth) lanes += ExpNonPositive(Load8(x + i) - max_logit);
    for (size_t k = 0; k < kWidth; ++k) sum += lanes[k];
  }
  for (size_t i = vectors_end; i < n; ++i) sum += ExpNonPositive(Floats8{} + (x[i] - max_logit))[0];
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
