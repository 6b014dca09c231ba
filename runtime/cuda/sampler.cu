#include "runtime/cuda/sampler.h"

#include <cstdint>

#include "runtime/check.h"
#include "runtime/cuda/launch.cuh"
#include "runtime/philox.h"
#include "runtime/sampling_math.h"

// Each step below is the CPU sampler's (runtime/cpu/sampler.cc), in the same float
// operations (sampling_math.h's *Rn helpers) and with integer sums where a threshold or the
// draw depends on them, so no order of the block's reductions changes a token.

namespace moe::cuda {
namespace {

using sampling::KeyOf;
using sampling::kSmallestKey;
using sampling::WeightOfKey;

// Threads per row: enough for about 64 tokens each, from one warp to kMaxThreads.
constexpr int kMaxThreads = 256;
constexpr int kMaxWarps = kMaxThreads / 32;

int ThreadsFor(int32_t vocab) {
  int threads = 32;
  while (threads < kMaxThreads && int64_t{threads} * 64 < vocab) threads *= 2;
  return threads;
}
constexpr float kInf = __builtin_huge_valf();

// The block's shared scratch.
struct Scratch {
  uint64_t histogram[2048];
  uint64_t words[kMaxWarps + 1];
  double sums[kMaxWarps + 1];
  uint32_t bin;
  uint64_t above;
  int32_t token;
};

// `op` over the block; every thread must call it and gets the result.
template <typename T, typename Op>
__device__ T BlockReduce(T v, Op op, T* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    T r = scratch[0];
    for (int w = 1; w < warps; ++w) r = op(r, scratch[w]);
    scratch[warps] = r;
  }
  __syncthreads();
  return scratch[warps];
}

struct Add {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  __device__ uint64_t operator()(uint64_t a, uint64_t b) const { return a > b ? a : b; }
};

// The sum of `v` over the threads before this one; `total` gets the block's.
__device__ uint64_t ExclusiveSum(uint64_t v, uint64_t* scratch, uint64_t& total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  uint64_t inclusive = v;
  for (int offset = 1; offset < 32; offset <<= 1) {
    const uint64_t below = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += below;
  }
  __syncthreads();
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint64_t running = 0;
    for (int w = 0; w < warps; ++w) {
      const uint64_t s = scratch[w];
      scratch[w] = running;
      running += s;
    }
    scratch[warps] = running;
  }
  __syncthreads();
  total = scratch[warps];
  return scratch[warp] + inclusive - v;
}

// A token's rank as one integer: larger for a larger value, then for a smaller id; 0 for
// NaN (never ranked). -0 ranks as +0, as the CPU's comparisons have it.
__device__ uint64_t Rank(float v, int32_t id) {
  if (v != v) return 0;
  const uint32_t bits = sampling::FloatBits(v == 0.0f ? 0.0f : v);
  const uint32_t ordered = (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
  return (uint64_t{ordered} << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(id));
}
__device__ int32_t IdOfRank(uint64_t rank) { return static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(rank)); }

// The best-ranked token of x [V] ranked below `below`; 0 if none.
__device__ uint64_t BestRankBelow(const float* x, int32_t V, uint64_t below, Scratch& s) {
  uint64_t best = 0;
  for (int32_t t = threadIdx.x; t < V; t += blockDim.x) {
    const uint64_t r = Rank(x[t], t);
    best = r < below && r > best ? r : best;
  }
  return BlockReduce(best, Max(), s.words);
}

struct Threshold {
  uint32_t key;      // the largest key whose keys at or above measure at least the target
  uint64_t measure;  // what the keys at or above it measure
};

// Radix select over keys in [kSmallestKey, kKeyOfOne], as offsets from kSmallestKey: 11
// bits, then 9, then 9 (the CPU's digits).
struct Digit {
  int shift;
  uint32_t mask;
};

// The CPU's SelectThreshold: over the keys >= floor_key, the largest key v whose keys >= v
// measure at least target_of(total) (1 each for top-k, their weight for top-p), or floor_key
// itself when that is all of them. Each digit is one pass over the row.
template <bool kWeighted, typename TargetOf>
__device__ Threshold SelectThreshold(const float* x, int32_t V, float max_logit, float inv_temperature,
                                     uint32_t floor_key, TargetOf target_of, Scratch& s) {
  uint32_t prefix = 0, high_mask = 0;  // the digits chosen so far, and their bits
  uint64_t above = 0, target = 0;      // what the keys above the current bin measure
  constexpr Digit kDigits[] = {{18, 2047}, {9, 511}, {0, 511}};
#pragma unroll
  for (int level = 0; level < 3; ++level) {
    const Digit d = kDigits[level];
    for (uint32_t b = threadIdx.x; b <= d.mask; b += blockDim.x) s.histogram[b] = 0;
    __syncthreads();
    for (int32_t t = threadIdx.x; t < V; t += blockDim.x) {
      const uint32_t key = KeyOf(x[t], max_logit, inv_temperature);
      if (key >= floor_key && ((key - kSmallestKey) & high_mask) == prefix) {
        atomicAdd(reinterpret_cast<unsigned long long*>(&s.histogram[((key - kSmallestKey) >> d.shift) & d.mask]),
                  static_cast<unsigned long long>(kWeighted ? WeightOfKey(key) : 1));
      }
    }
    __syncthreads();
    // Each thread owns a run of bins; what the bins above its run measure comes from a
    // sum over the threads after it.
    const uint32_t per_thread = (d.mask + 1) / blockDim.x, first = threadIdx.x * per_thread;
    uint64_t mine = 0;
    for (uint32_t b = first; b < first + per_thread; ++b) mine += s.histogram[b];
    uint64_t total = 0;
    const uint64_t before = ExclusiveSum(mine, s.words, total);
    if (level == 0) {
      target = target_of(total);
      target = target > 1 ? target : 1;
      if (target >= total) return {floor_key, total};
    }
    uint64_t acc = above + (total - before - mine);
    for (uint32_t b = first + per_thread; b-- > first;) {
      const uint64_t h = s.histogram[b];
      if (acc < target && acc + h >= target) {  // exactly one bin of the block
        s.bin = b;
        s.above = acc;
      }
      acc += h;
    }
    __syncthreads();
    const uint32_t bin = s.bin;
    above = s.above;
    const uint64_t in_bin = s.histogram[bin];
    __syncthreads();  // everyone has read the bin before the next level clears it
    prefix |= bin << d.shift;
    if (level == 2) return {kSmallestKey + prefix, above + in_bin};
    high_mask = ~((uint32_t{1} << d.shift) - 1);
  }
  __trap();  // unreachable: the last level returns
  return {};
}

// The CPU's RowSampler::Draw over the processed logits x [V].
__device__ int32_t Draw(const float* x, int32_t V, float max_logit, const RowSampling& row, Scratch& s) {
  const float inv_t = row.inv_temperature;
  uint32_t threshold = row.min_key > kSmallestKey ? row.min_key : kSmallestKey;
  if (row.top_k > 0) {
    const uint64_t k = static_cast<uint64_t>(row.top_k);
    threshold = SelectThreshold<false>(x, V, max_logit, inv_t, threshold, [k](uint64_t) { return k; }, s).key;
  }
  uint64_t kept_weight = 0;  // of the keys >= threshold
  if (row.top_p_fraction < RowSampling::kFullFraction) {
    const uint32_t fraction = row.top_p_fraction;
    auto top_p = [fraction](uint64_t total) { return sampling::ScaleByFraction(total, fraction); };
    const Threshold p = SelectThreshold<true>(x, V, max_logit, inv_t, threshold, top_p, s);
    threshold = p.key;
    kept_weight = p.measure;
  } else {
    uint64_t sum = 0;
    for (int32_t t = threadIdx.x; t < V; t += blockDim.x) {
      const uint32_t key = KeyOf(x[t], max_logit, inv_t);
      sum += key >= threshold ? WeightOfKey(key) : 0;
    }
    kept_weight = BlockReduce(sum, Add(), s.words);
  }
  // The draw: the first token, in id order, at which the running kept weight passes r. Each
  // thread weighs a run of ids; the one whose run holds r walks it.
  const uint64_t r = sampling::ScaleByFraction(kept_weight, PhiloxBits24(row.seed, row.output_index, row.choice));
  const int32_t run = (V + blockDim.x - 1) / blockDim.x;
  const int32_t begin = threadIdx.x * run, end = begin + run < V ? begin + run : V;
  uint64_t mine = 0;
  for (int32_t t = begin; t < end; ++t) {
    const uint32_t key = KeyOf(x[t], max_logit, inv_t);
    mine += key >= threshold ? WeightOfKey(key) : 0;
  }
  if (threadIdx.x == 0) s.token = -1;  // (ExclusiveSum's barriers order it before any write)
  uint64_t total = 0;
  uint64_t running = ExclusiveSum(mine, s.words, total);
  if (running <= r && r < running + mine) {  // exactly one thread
    for (int32_t t = begin; t < end; ++t) {
      const uint32_t key = KeyOf(x[t], max_logit, inv_t);
      running += key >= threshold ? WeightOfKey(key) : 0;
      if (running > r) {
        s.token = t;
        break;
      }
    }
  }
  __syncthreads();
  return s.token;
}

// The raw logit of `token`: its saved original if the row adjusted it.
__device__ float RawLogit(const float* x, const DeviceSamplingParams& p, const RowSampling& row, int32_t token) {
  int32_t lo = row.adjustments_begin, hi = row.adjustments_end;  // adjustments in token order
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (p.adjustments[mid].token < token) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < row.adjustments_end && p.adjustments[lo].token == token ? p.originals[lo] : x[token];
}

// One block per row.
__global__ void __launch_bounds__(kMaxThreads) SampleRowsKernel(const SampleRowsArgs a) {
  AwaitPrecedingKernels();
  __shared__ Scratch s;
  const int32_t row_index = a.first_row + static_cast<int32_t>(blockIdx.x);
  const DeviceSamplingParams& p = *a.params;
  const RowSampling row = p.rows[row_index];
  const int32_t V = a.vocab;
  float* x = a.logits + static_cast<int64_t>(blockIdx.x) * V;
  TokenLogprob* top = a.top + static_cast<int64_t>(row_index) * a.top_stride;

  // The raw logits: their normalizer (a double sum of e^(l - max), NaNs skipped), then the
  // row's top_logprobs most likely, best first.
  const uint64_t raw_best = BestRankBelow(x, V, ~uint64_t{0}, s);
  const float raw_max = raw_best == 0 ? -kInf : x[IdOfRank(raw_best)];
  float log_z = raw_max;
  if (raw_max > -kInf && raw_max < kInf) {
    double sum = 0;
    for (int32_t t = threadIdx.x; t < V; t += blockDim.x) {
      const float v = x[t];
      if (v == v) sum += expf(v - raw_max);
    }
    log_z = raw_max + static_cast<float>(log(BlockReduce(sum, Add(), s.sums)));
  }
  uint64_t previous = ~uint64_t{0};
  for (int32_t j = 0; j < row.top_logprobs; ++j) {
    const uint64_t best = previous == 0 ? 0 : BestRankBelow(x, V, previous, s);
    if (threadIdx.x == 0) {
      top[j] = best == 0 ? TokenLogprob{-1, -kInf} : TokenLogprob{IdOfRank(best), x[IdOfRank(best)] - log_z};
    }
    previous = best;
  }

  // The processed logits, in place: the raw value of each adjusted token is kept aside.
  __syncthreads();  // every raw read above is done
  for (int32_t i = row.adjustments_begin + threadIdx.x; i < row.adjustments_end; i += blockDim.x) {
    const TokenAdjustment adjustment = p.adjustments[i];
    if (adjustment.token < 0 || adjustment.token >= V) continue;
    const float raw = x[adjustment.token];
    p.originals[i] = raw;
    x[adjustment.token] = sampling::ProcessLogit(raw, adjustment, row);
  }
  __syncthreads();  // every adjustment is in place before any thread reads the row again
  const bool adjusted = row.adjustments_end > row.adjustments_begin;
  const uint64_t best = adjusted ? BestRankBelow(x, V, ~uint64_t{0}, s) : raw_best;
  const float max_logit = best == 0 ? -kInf : x[IdOfRank(best)];
  if (!(max_logit > -kInf)) {  // nothing can be chosen: the CPU's empty result
    if (threadIdx.x == 0) {
      a.out[row_index] = DeviceSample{-1, 0.0f};
      for (int32_t j = 0; j < row.top_logprobs; ++j) top[j] = TokenLogprob{-1, 0.0f};
    }
    return;
  }
  // Greedy, or a +inf logit (which takes all the mass): the first maximum.
  const int32_t token = row.greedy || max_logit == kInf ? IdOfRank(best) : Draw(x, V, max_logit, row, s);
  if (threadIdx.x == 0) a.out[row_index] = DeviceSample{token, RawLogit(x, p, row, token) - log_z};
}

}  // namespace

void SampleRows(const SampleRowsArgs& args, cudaStream_t stream) {
  CHECK(args.rows >= 0 && args.vocab > 0 && args.first_row >= 0 && args.logits && args.params && args.out);
  CHECK(args.top != nullptr || args.top_stride == 0);
  if (args.rows == 0) return;
  Launch(SampleRowsKernel, args.rows, ThreadsFor(args.vocab), 0, stream, args);
}

}  // namespace moe::cuda
