#include "runtime/cpu/attention.h"

#include <algorithm>
#include <cmath>

#include "runtime/check.h"
#include "runtime/cpu/float_vector.h"
#include "runtime/cpu/log_sum_exp.h"

namespace moe::cpu {

void WriteKv(const Tensor& k, const Tensor& v, const StepBatch& batch, Tensor& key_cache,
             Tensor& value_cache) {
  const int64_t T = k.dim(0);
  const int64_t row = k.dim(1) * k.dim(2);  // KVH * hd
  CHECK(key_cache.dim(2) * key_cache.dim(3) == row && v.numel() == k.numel());
  float* kc = key_cache.data<float>();
  float* vc = value_cache.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t slot = batch.slot_mapping[t];
    std::copy_n(k.Row<float>(t), row, kc + slot * row);
    std::copy_n(v.Row<float>(t), row, vc + slot * row);
  }
}

namespace {

using vec::Floats;
using vec::kWidth;
using vec::Load;

// dot(a, b) over n floats in one fixed order: 16 partial sums, then a fixed tree over the
// lanes (halves added), then the tail; vectorized without -ffast-math.
inline float Dot(const float* a, const float* b, int64_t n) {
  Floats acc = {};
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) acc += Load(a + i) * Load(b + i);
  using Floats8 = float __attribute__((vector_size(32)));
  Floats8 lo, hi;
  std::memcpy(&lo, &acc, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&acc) + sizeof(lo), sizeof(hi));
  const Floats8 s8 = lo + hi;
  const float s4[4] = {s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]};
  float sum = (s4[0] + s4[2]) + (s4[1] + s4[3]);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// o[0, n) += p * v[0, n).
inline void AddScaled(float p, const float* v, int64_t n, float* o) {
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) {
    const Floats sum = Load(o + i) + p * Load(v + i);
    std::memcpy(o + i, &sum, sizeof(sum));
  }
  for (; i < n; ++i) o[i] += p * v[i];
}

}  // namespace

void PagedAttention(const Tensor& q, const Tensor& key_cache, const Tensor& value_cache,
                    const StepBatch& batch, const AttentionParams& params, Tensor& out) {
  const int64_t T = q.dim(0), H = q.dim(1), hd = q.dim(2);
  const int64_t block_size = key_cache.dim(1), KVH = key_cache.dim(2);
  CHECK(key_cache.dim(3) == hd && H % KVH == 0 && out.numel() == q.numel());
  const int64_t group = H / KVH;  // query heads sharing a kv head: each key row serves them all
  const int64_t kv_row = KVH * hd;

  std::vector<int32_t> seq_of_token(T);
  for (int32_t s = 0; s < batch.num_seqs(); ++s) {
    for (int32_t t = batch.query_starts[s]; t < batch.query_starts[s + 1]; ++t) seq_of_token[t] = s;
  }
  const float* kc = key_cache.data<float>();
  const float* vc = value_cache.data<float>();

  int64_t work = 0;  // query-key dot products in this step, to keep small steps serial
  for (int64_t t = 0; t < T; ++t) work += (batch.positions[t] + 1) * H * hd;
#pragma omp parallel if (work >= (1 << 18))
  {
    std::vector<float> scores;  // [group, keys]
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t kvh = 0; kvh < KVH; ++kvh) {
        const int32_t* table = batch.block_table(seq_of_token[t]);
        const int64_t pos = batch.positions[t];
        const int64_t first =
            params.sliding_window > 0 ? std::max<int64_t>(0, pos - params.sliding_window + 1) : 0;
        const int64_t keys = pos - first + 1;
        const float* qt = q.Row<float>(t) + kvh * group * hd;  // [group, hd]
        scores.resize(group * keys);
        for (int64_t j = first; j <= pos; ++j) {
          const int64_t slot = int64_t{table[j / block_size]} * block_size + j % block_size;
          const float* kv = kc + slot * kv_row + kvh * hd;
          for (int64_t g = 0; g < group; ++g) scores[g * keys + j - first] = Dot(qt + g * hd, kv, hd) * params.scale;
        }
        float* ot = out.Row<float>(t) + kvh * group * hd;  // [group, hd]
        std::fill_n(ot, group * hd, 0.0f);
        for (int64_t g = 0; g < group; ++g) {
          const absl::Span<float> sg(scores.data() + g * keys, keys);
          const float inv = 1.0f / ExpAroundInPlace(sg, MaxLogit(sg));
          for (int64_t j = 0; j < keys; ++j) sg[j] *= inv;
        }
        for (int64_t j = first; j <= pos; ++j) {
          const int64_t slot = int64_t{table[j / block_size]} * block_size + j % block_size;
          const float* vv = vc + slot * kv_row + kvh * hd;
          for (int64_t g = 0; g < group; ++g) AddScaled(scores[g * keys + j - first], vv, hd, ot + g * hd);
        }
      }
    }
  }
}

}  // namespace moe::cpu
