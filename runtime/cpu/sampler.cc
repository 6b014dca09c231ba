#include "runtime/cpu/sampler.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
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
    if (vec::AnyLane(Load(x.data() + i) == value)) break;
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

// sampling::WeightOfKey by the float a key is: the bits of p in [0, 1], whose weight is
// floor(p * 2^40). The scaling is exact and the conversion truncates, so a multiply and a
// conversion (one instruction each with AVX-512) give what the shifts give.
inline uint64_t Weight(uint32_t key) { return static_cast<uint64_t>(std::bit_cast<float>(key) * 0x1p40f); }

// The weight of the keys at or above each of `thresholds`, in one pass: Weight over 64-bit
// lanes.
template <size_t N>
std::array<uint64_t, N> WeightsAtOrAbove(absl::Span<const uint32_t> keys, const std::array<uint32_t, N>& thresholds) {
  constexpr int64_t kLanes = 8;
  using Keys = uint32_t __attribute__((vector_size(4 * kLanes)));
  using Wide = uint64_t __attribute__((vector_size(8 * kLanes)));
  using Probabilities = float __attribute__((vector_size(4 * kLanes)));
  const int64_t n = keys.size(), vectors_end = n - n % kLanes;
  Wide sums[N] = {};
  for (int64_t i = 0; i < vectors_end; i += kLanes) {
    Keys k32;
    std::memcpy(&k32, keys.data() + i, sizeof(k32));
    const Wide weight = __builtin_convertvector(std::bit_cast<Probabilities>(k32) * 0x1p40f, Wide);
    const Wide key = __builtin_convertvector(k32, Wide);
    for (size_t j = 0; j < N; ++j) sums[j] += key >= thresholds[j] ? weight : 0;
  }
  std::array<uint64_t, N> out{};
  for (size_t j = 0; j < N; ++j) {
    for (int k = 0; k < kLanes; ++k) out[j] += sums[j][k];
    for (int64_t i = vectors_end; i < n; ++i) out[j] += keys[i] >= thresholds[j] ? Weight(keys[i]) : 0;
  }
  return out;
}

uint64_t WeightAtOrAbove(absl::Span<const uint32_t> keys, uint32_t threshold) {
  return WeightsAtOrAbove<1>(keys, {threshold})[0];
}

// The keys at or above `cutoff`, in order, into `out` (grown, never shrunk): vectors with
// none are skipped, the others written branch-free (the nucleus may hold a third of a flat row).
absl::Span<const uint32_t> CollectAtOrAbove(absl::Span<const uint32_t> keys, uint32_t cutoff,
                                            std::vector<uint32_t>& out) {
  if (out.size() < keys.size() + kWidth) out.resize(keys.size() + kWidth);
  const size_t n = keys.size(), vectors_end = n - n % kWidth;
  size_t kept = 0;
  auto keep = [&](uint32_t key) {
    out[kept] = key;
    kept += key >= cutoff;
  };
  size_t i = 0;
#if defined(__AVX512F__)
  // The kept lanes packed in a register and the whole register stored (a compressing store
  // to memory is microcoded on AMD), the next store starting where the kept ones end.
  for (; i < vectors_end; i += kWidth) {
    const __m512i k = _mm512_loadu_si512(keys.data() + i);
    const __mmask16 keep_lanes = _mm512_cmpge_epu32_mask(k, _mm512_set1_epi32(static_cast<int>(cutoff)));
    _mm512_storeu_si512(out.data() + kept, _mm512_maskz_compress_epi32(keep_lanes, k));
    kept += std::popcount(keep_lanes);
  }
#else
  for (; i < vectors_end; i += kWidth) {
    if (!vec::AnyLane(Load(keys.data() + i) >= cutoff)) continue;
    for (size_t j = i; j < i + kWidth; ++j) keep(keys[j]);
  }
#endif
  for (; i < n; ++i) keep(keys[i]);
  return absl::MakeConstSpan(out.data(), kept);
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
    if (boundary.size() < keys.size()) boundary.resize(keys.size());
    size_t kept = 0;
    auto keep = [&](uint32_t key) {  // branch-free: every key is written, the bin's are kept
      boundary[kept] = key;
      kept += in_bin(key);
    };
    if (level == 0) {
      // Over the whole row, where the bin holds a few keys in a hundred: skip the vectors
      // that hold none of them.
      const size_t n = keys.size(), vectors_end = n - n % kWidth;
      size_t i = 0;
      for (; i < vectors_end; i += kWidth) {
        const vec::Uints k = Load(keys.data() + i);
        if (!vec::AnyLane((k >= floor_key) & (((k - kSmallestKey) & high_mask) == prefix))) continue;
        for (int lane = 0; lane < kWidth; ++lane) keep(k[lane]);
      }
      for (; i < n; ++i) keep(keys[i]);
    } else {
      for (size_t i = 0; i < boundary_size; ++i) keep(boundary[i]);
    }
    boundary_size = kept;
  }
  CHECK(false);  // unreachable: the last level returns
  return {};
}

// The top-p threshold over the keys >= floor_key and the weight it keeps: SelectThreshold's.
Threshold TopPThreshold(absl::Span<const uint32_t> keys, uint32_t floor_key, uint32_t fraction,
                        std::vector<uint32_t>& candidates, std::vector<uint32_t>& boundary) {
  auto weight = [](uint32_t key) { return Weight(key); };  // a lambda inlines; a function pointer would not
  auto top_p = [fraction](uint64_t total) { return sampling::ScaleByFraction(total, fraction); };
  // The nucleus of a real row holds most of its weight in a few of its largest keys: find the
  // highest cutoff (p = 2^-2 ... 2^-14 of the most likely) whose keys already weigh the
  // target, and select among those alone. The threshold is the same: it is at or above any
  // key whose keys weigh the target.
  constexpr std::array<uint32_t, 6> kCutoffs = {(127 - 2) << 23, (127 - 4) << 23, (127 - 6) << 23,
                                                (127 - 8) << 23, (127 - 11) << 23, (127 - 14) << 23};
  const std::array<uint64_t, 7> weights = WeightsAtOrAbove<7>(
      keys, {floor_key, kCutoffs[0], kCutoffs[1], kCutoffs[2], kCutoffs[3], kCutoffs[4], kCutoffs[5]});
  const uint64_t total = weights[0];
  const uint64_t target = std::max<uint64_t>(top_p(total), 1);
  if (target >= total) return {floor_key, total};
  for (size_t j = 0; j < kCutoffs.size(); ++j) {
    if (kCutoffs[j] <= floor_key || weights[j + 1] < target) continue;
    const absl::Span<const uint32_t> above = CollectAtOrAbove(keys, kCutoffs[j], candidates);
    return SelectThreshold(above, kCutoffs[j], weight, [target](uint64_t) { return target; }, boundary);
  }
  return SelectThreshold(keys, floor_key, weight, top_p, boundary);
}

// Top-k for a small k: the k-th largest key >= floor_key (repeats counted), or floor_key
// when fewer than k are; the same kept set as SelectThreshold's. A min-heap of the k largest
// so far, whose root the vectors with no larger key skip at once.
constexpr int32_t kMaxHeapTopK = 256;
uint32_t KthLargestKey(absl::Span<const uint32_t> keys, uint32_t floor_key, size_t k, std::vector<uint32_t>& heap) {
  heap.clear();
  const std::greater<uint32_t> min_heap;
  auto offer = [&](uint32_t key) {
    if (key < floor_key) return;
    if (heap.size() < k) {
      heap.push_back(key);
      std::push_heap(heap.begin(), heap.end(), min_heap);
    } else if (key > heap.front()) {
      std::pop_heap(heap.begin(), heap.end(), min_heap);
      heap.back() = key;
      std::push_heap(heap.begin(), heap.end(), min_heap);
    }
  };
  const size_t n = keys.size(), vectors_end = n - n % kWidth;
  size_t i = 0;
  for (; i < n && heap.size() < k; ++i) offer(keys[i]);
  for (; i < vectors_end && i % kWidth != 0; ++i) offer(keys[i]);
  for (; i < vectors_end; i += kWidth) {
    if (!vec::AnyLane(Load(keys.data() + i) > heap.front())) continue;
    for (size_t j = i; j < i + kWidth; ++j) offer(keys[j]);
  }
  for (; i < n; ++i) offer(keys[i]);
  return heap.size() < k ? floor_key : heap.front();
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
    if (vec::AnyLane(Load(x.data() + t) > heap.front().logprob)) {
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
  if (row.top_k > 0 && row.top_k <= kMaxHeapTopK) {
    threshold = KthLargestKey(keys, threshold, row.top_k, boundary_);
  } else if (row.top_k > 0) {
    auto count = [](uint32_t) { return uint64_t{1}; };
    auto k = [&](uint64_t) { return uint64_t(row.top_k); };
    threshold = SelectThreshold(keys, threshold, count, k, boundary_).key;  // the k-th largest key
  }
  if (row.top_p_fraction < RowSampling::kFullFraction) {
    const Threshold p = TopPThreshold(keys, threshold, row.top_p_fraction, candidates_, boundary_);
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
      running += keys[t] >= threshold ? Weight(keys[t]) : 0;
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
  // One sampler per thread of the calling thread's team, owned by the calling thread: a
  // thread_local in OpenMP's pool threads is never freed (LeakSanitizer reports it at exit).
  thread_local std::vector<RowSampler> samplers;
  const size_t team = rows > 1 ? omp_get_max_threads() : 1;
  if (samplers.size() < team) samplers.resize(team);
  RowSampler* const sampler = samplers.data();  // the name `samplers` is per thread inside the region
#pragma omp parallel for schedule(dynamic, 1) if (rows > 1)
  for (int r = 0; r < rows; ++r) {
    const RowSampler::Result s = sampler[omp_get_thread_num()].Sample(
        absl::MakeConstSpan(logits.Row<float>(r), V), sampling.rows[r], sampling.adjustments_of(r),
        absl::MakeSpan(out.top).subspan(static_cast<size_t>(r) * out.top_n, out.top_n));
    out.tokens[r] = s.token;
    out.logprobs[r] = s.logprob;
  }
}

}  // namespace moe::cpu
