#include "runtime/cpu/sampler.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <queue>

#include "runtime/check.h"
#include "runtime/cpu/float_vector.h"
#include "runtime/cpu/log_sum_exp.h"
#include "runtime/philox.h"
#include "runtime/sampling_math.h"

// This file compiles with -ffp-contract=off (runtime/CMakeLists.txt): each lane of the
// vector exp below must round as sampling::ExpNonPositive does, multiply and add apart.

namespace moe::cpu {
namespace {

using sampling::kKeyOfOne;
using sampling::kSmallestKey;
using sampling::WeightOfKey;

using vec::Floats;
using vec::Ints;
using vec::kWidth;
using vec::Load;
using vec::Splat;

// sampling::ExpNonPositive on every lane, operation for operation.
inline Floats ExpNonPositive(Floats x) {
  const Floats lowest = Splat(sampling::kLowestExponent);
  x = x > lowest ? x : lowest;
  const Floats t = x * sampling::kLog2E;
  Ints whole = __builtin_convertvector(t, Ints);        // truncates toward 0 ...
  whole += __builtin_convertvector(whole, Floats) > t;  // ... so -1 where t is not whole: floor
  const Floats f = t - __builtin_convertvector(whole, Floats);
  Floats p = Splat(sampling::Exp2Coefficient(0));
  for (int i = 1; i < 7; ++i) p = p * f + sampling::Exp2Coefficient(i);
  return p * std::bit_cast<Floats>((whole + 127) << 23);
}

// The first index holding `value` (which x holds).
int32_t FirstIndexOf(absl::Span<const float> x, float value) {
  const int64_t n = x.size(), vectors_end = n - n % kWidth;
  int64_t i = 0;
  for (; i < vectors_end; i += kWidth) {
    // Any lane equal: OR the mask's halves down to one 64-bit word (a few vector ops).
    const Ints equal = Load(x.data() + i) == value;
    uint64_t words[kWidth / 2];
    std::memcpy(words, &equal, sizeof(words));
    uint64_t any = 0;
    for (uint64_t w : words) any |= w;
    if (any != 0) break;
  }
  while (x[i] != value) ++i;
  return static_cast<int32_t>(i);
}

// keys[t] = sampling::KeyOf(x[t], max_logit, inv_temperature).
void ComputeKeys(absl::Span<const float> x, float max_logit, float inv_temperature, uint32_t* keys) {
  const int64_t n = x.size(), vectors_end = n - n % kWidth;
  for (int64_t i = 0; i < vectors_end; i += kWidth) {
    const Floats l = Load(x.data() + i);
    const Ints finite = l > -INFINITY;  // false for -inf and NaN
    const Ints bits = std::bit_cast<Ints>(ExpNonPositive((l - max_logit) * inv_temperature));
    const Ints key = finite & bits;
    std::memcpy(keys + i, &key, sizeof(key));
  }
  for (int64_t i = vectors_end; i < n; ++i) keys[i] = sampling::KeyOf(x[i], max_logit, inv_temperature);
}

// The weight of the keys at or above `threshold`: sampling::WeightOfKey over 64-bit lanes.
uint64_t WeightAtOrAbove(absl::Span<const uint32_t> keys, uint32_t threshold) {
  constexpr int64_t kLanes = 8;
  using Keys = uint32_t __attribute__((vector_size(4 * kLanes)));
  using Wide = uint64_t __attribute__((vector_size(8 * kLanes)));
  using Signed = int64_t __attribute__((vector_size(8 * kLanes)));
  const int64_t n = keys.size(), vectors_end = n - n % kLanes;
  Wide sums{};
  for (int64_t i = 0; i < vectors_end; i += kLanes) {
    Keys k32;
    std::memcpy(&k32, keys.data() + i, sizeof(k32));
    const Wide key = __builtin_convertvector(k32, Wide);
    const Signed shift = std::bit_cast<Signed>(key >> 23) - 110;
    const Wide mantissa = (key & 0x7FFFFF) | 0x800000;
    const Signed right = -shift < 31 ? -shift : 31;
    const Wide weight = shift >= 0 ? mantissa << std::bit_cast<Wide>(shift & 63) : mantissa >> std::bit_cast<Wide>(right);
    sums += key >= threshold ? weight : 0;
  }
  uint64_t sum = 0;
  for (int k = 0; k < kLanes; ++k) sum += sums[k];
  for (int64_t i = vectors_end; i < n; ++i) sum += keys[i] >= threshold ? WeightOfKey(keys[i]) : 0;
  return sum;
}

// Radix select over keys in [kSmallestKey, kKeyOfOne], as offsets from kSmallestKey (under
// 2^29): 11 bits, then 9, then 9.
struct Digit {
  int shift;
  uint32_t mask;
};
constexpr Digit kDigits[] = {{18, 2047}, {9, 511}, {0, 511}};

struct Threshold {
  uint32_t key;     // the largest key whose keys at or above measure at least the target
  uint64_t measure;  // what the keys at or above it measure
};

// Over the keys >= floor_key, which measure `total` together: the largest key v such that
// the keys >= v measure at least target = target_of(total), or floor_key itself when target
// is all of it. `measure(key)` is 1 for top-k, the key's weight for top-p. One histogram
// pass over the row, then passes over the keys of the bin the threshold falls in.
template <class Measure, class TargetOf>
Threshold SelectThreshold(absl::Span<const uint32_t> keys, uint32_t floor_key, Measure measure, TargetOf target_of,
                          std::vector<uint32_t>& boundary) {
  uint64_t histogram[2][2048];
  uint32_t prefix = 0;  // the digits chosen so far, as an offset from kSmallestKey
  uint64_t above = 0;   // what the keys above the current bin measure
  uint64_t target = 0;
  size_t boundary_size = 0;  // boundary[0, boundary_size): the keys of the bin chosen last
  for (int level = 0; level < 3; ++level) {
    const Digit d = kDigits[level];
    std::memset(histogram, 0, sizeof(histogram));
    if (level == 0) {
      // Two histograms, even and odd keys, so neighbours in one bin do not wait on each other.
      auto add = [&](uint64_t* bins, uint32_t key) {
        if (key >= floor_key) bins[((key - kSmallestKey) >> d.shift) & d.mask] += measure(key);
      };
      const size_t n = keys.size();
      size_t i = 0;
      for (; i + 1 < n; i += 2) {
        add(histogram[0], keys[i]);
        add(histogram[1], keys[i + 1]);
      }
      if (i < n) add(histogram[0], keys[i]);
      uint64_t total = 0;
      for (uint32_t b = 0; b <= d.mask; ++b) total += histogram[0][b] += histogram[1][b];
      target = std::max<uint64_t>(target_of(total), 1);
      if (target >= total) return {floor_key, total};
    } else {
      for (uint32_t key : absl::MakeConstSpan(boundary.data(), boundary_size)) histogram[0][((key - kSmallestKey) >> d.shift) & d.mask] += measure(key);
    }
    uint32_t bin = d.mask;
    while (above + histogram[0][bin] < target) above += histogram[0][bin--];
    prefix |= bin << d.shift;
    if (level == 2) return {kSmallestKey + prefix, above + histogram[0][bin]};
    // The keys of this bin, for the next digit.
    const uint32_t high_mask = ~((uint32_t{1} << d.shift) - 1);
    auto in_bin = [&](uint32_t key) {
      return key >= floor_key && ((key - kSmallestKey) & high_mask) == prefix;
    };
    const absl::Span<const uint32_t> from = level == 0 ? keys : absl::MakeConstSpan(boundary.data(), boundary_size);
    if (boundary.size() < keys.size()) boundary.resize(keys.size());
    size_t kept = 0;
    for (uint32_t key : from) {  // branch-free: every key is written, the bin's are kept
      boundary[kept] = key;
      kept += in_bin(key);
    }
    boundary_size = kept;
  }
  CHECK(false);  // unreachable: the last level returns
  return {};
}

// The n most likely raw tokens, by value then id; NaNs are skipped.
void TopTokens(absl::Span<const float> x, float log_z, absl::Span<TokenLogprob> top) {
  const size_t n = top.size();
  if (n == 0) return;
  // A min-heap of the best so far; its root is the one to beat.
  auto better = [](const TokenLogprob& a, const TokenLogprob& b) {
    return a.logprob > b.logprob || (a.logprob == b.logprob && a.token < b.token);
  };
  std::vector<TokenLogprob> heap;
  heap.reserve(n + 1);
  auto offer = [&](int64_t t) {
    const float v = x[t];
    if (v != v) return;
    if (heap.size() == n) {
      if (!(v > heap.front().logprob)) return;  // later ids lose ties
      std::pop_heap(heap.begin(), heap.end(), better);
      heap.pop_back();
    }
    heap.push_back({static_cast<int32_t>(t), v});
    std::push_heap(heap.begin(), heap.end(), better);
  };
  const int64_t V = x.size(), vectors_end = V - V % kWidth;
  int64_t t = 0;
  for (; t < V && heap.size() < n; ++t) offer(t);
  for (; t < vectors_end && t % kWidth != 0; ++t) offer(t);
  for (; t < vectors_end; t += kWidth) {
    const Ints beats = Load(x.data() + t) > heap.front().logprob;
    bool any = false;
    for (int k = 0; k < kWidth; ++k) any |= beats[k] != 0;
    if (any) {
      for (int k = 0; k < kWidth; ++k) offer(t + k);
    }
  }
  for (; t < V; ++t) offer(t);
  std::sort_heap(heap.begin(), heap.end(), better);  // best first
  for (size_t i = 0; i < n; ++i) {
    top[i] = i < heap.size() ? TokenLogprob{heap[i].token, heap[i].logprob - log_z} : TokenLogprob{-1, -INFINITY};
  }
}

}  // namespace

RowSampler::Result RowSampler::Sample(absl::Span<const float> logits, const RowSampling& row,
                                      absl::Span<const TokenAdjustment> adjustments, absl::Span<TokenLogprob> top) {
  const int64_t V = logits.size();
  absl::Span<const float> x = logits;
  if (!adjustments.empty()) {
    processed_.assign(logits.begin(), logits.end());
    for (const TokenAdjustment& a : adjustments) {
      if (a.token >= 0 && a.token < V) processed_[a.token] = sampling::ProcessLogit(logits[a.token], a, row);
    }
    x = processed_;
  }
  const float max_logit = MaxLogit(x);
  if (!(max_logit > -INFINITY)) return {};
  Result out;
  // A +inf logit takes all the mass (the first one, if several).
  out.token = row.greedy || max_logit == INFINITY ? FirstIndexOf(x, max_logit) : Draw(x, max_logit, row);
  // Always: every choice's confidence is made of these (see Confidence in engine/output.h).
  const float raw_max = x.data() == logits.data() ? max_logit : MaxLogit(logits);
  const float log_z = std::isfinite(raw_max) ? LogSumExpAround(logits, raw_max) : raw_max;
  out.logprob = logits[out.token] - log_z;
  TopTokens(logits, log_z, top.subspan(0, row.top_logprobs));
  return out;
}

int32_t RowSampler::Draw(absl::Span<const float> x, float max_logit, const RowSampling& row) {
  const int64_t V = x.size();
  keys_.resize(V);
  ComputeKeys(x, max_logit, row.inv_temperature, keys_.data());
  const absl::Span<const uint32_t> keys(keys_);
  uint32_t threshold = std::max(row.min_key, kSmallestKey);
  uint64_t kept_weight = 0;  // of the keys >= threshold
  if (row.top_k > 0) {
    auto count = [](uint32_t) { return uint64_t{1}; };
    auto k = [&](uint64_t) { return uint64_t(row.top_k); };
    threshold = SelectThreshold(keys, threshold, count, k, boundary_).key;  // the k-th largest key
  }
  if (row.top_p_fraction < RowSampling::kFullFraction) {
    auto top_p = [&](uint64_t total) { return sampling::ScaleByFraction(total, row.top_p_fraction); };
    auto weight = [](uint32_t key) { return WeightOfKey(key); };  // a lambda inlines; a function pointer would not
    const Threshold p = SelectThreshold(keys, threshold, weight, top_p, boundary_);
    threshold = p.key;
    kept_weight = p.measure;
  } else {
    kept_weight = WeightAtOrAbove(keys, threshold);
  }
  // The draw: the first token, in id order, where the running kept weight passes r.
  const uint64_t r = sampling::ScaleByFraction(kept_weight, PhiloxBits24(row.seed, row.output_index, row.choice));
  constexpr int64_t kBlock = 512;
  uint64_t running = 0;
  for (int64_t start = 0; start < V; start += kBlock) {
    const int64_t end = std::min(V, start + kBlock);
    const uint64_t block = WeightAtOrAbove(keys.subspan(start, end - start), threshold);
    if (running + block <= r) {
      running += block;
      continue;
    }
    for (int64_t t = start; t < end; ++t) {
      running += keys[t] >= threshold ? WeightOfKey(keys[t]) : 0;
      if (running > r) return static_cast<int32_t>(t);
    }
  }
  CHECK(false) << "the draw " << r << " is past the kept weight " << kept_weight;
  return -1;
}

void SampleRows(const Tensor& logits, const SamplingBatch& sampling, StepSamples& out) {
  const int rows = sampling.num_rows();
  out.Resize(rows, sampling.max_top_logprobs());
  if (rows == 0) return;  // a step of prompt chunks only: its logits may be empty
  CHECK_EQ(logits.dim(0), rows);
  const int64_t V = logits.dim(1);
  static thread_local RowSampler sampler;
#pragma omp parallel for schedule(dynamic, 1) if (rows > 1)
  for (int r = 0; r < rows; ++r) {
    const RowSampler::Result s =
        sampler.Sample(absl::MakeConstSpan(logits.Row<float>(r), V), sampling.rows[r], sampling.adjustments_of(r),
                       absl::MakeSpan(out.top).subspan(static_cast<size_t>(r) * out.top_n, out.top_n));
    out.tokens[r] = s.token;
    out.logprobs[r] = s.logprob;
  }
}

}  // namespace moe::cpu
