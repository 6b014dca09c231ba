// The CUDA sampler against the CPU sampler: the same token for the same logits, parameters
// and seed over 10,000 rows of mixed parameters, the same logprobs (to float rounding) and
// top logprobs, and the chi-square tests of the CPU sampler's draws. Skipped without a GPU.
#include <array>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "gtest/gtest.h"
#include "runtime/cpu/sampler.h"
#include "runtime/cuda/device_sampler.h"
#include "runtime/engine/sampler.h"

namespace moe {
namespace {

using cuda::DeviceSampler;
using cuda::DeviceTensor;

// Samples every row of `logits` [R, V] on the device.
StepSamples SampleOnDevice(const Tensor& logits, const SamplingBatch& sampling) {
  StepSamples out;
  const int32_t rows = static_cast<int32_t>(logits.dim(0));
  auto sampler = DeviceSampler::Create({.max_rows = rows, .vocab_size = static_cast<int32_t>(logits.dim(1))});
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  auto device = DeviceTensor::FromHost(logits, DType::kF32);
  EXPECT_TRUE(device.ok()) << device.status();
  if (!sampler.ok() || !device.ok()) return out;
  EXPECT_TRUE(sampler->Upload(sampling, rows, nullptr).ok());
  sampler->Enqueue(device->data<float>(), 0, rows, nullptr);
  EXPECT_TRUE(sampler->EnqueueReadback(sampling, nullptr).ok());
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  sampler->Read(sampling, out);
  return out;
}

// Rows of every kind: spread and ties vary (wide normals, coarse grids where many tokens
// share a value), with every sampling parameter, penalties over a history, bias, masks,
// logprobs, and rows with -inf, NaN and +inf logits.
struct Rows {
  Tensor logits;  // [R, V]
  SamplingBatch sampling;
  std::vector<SamplingParams> params;  // [R]
};

Rows MixedRows(int rows, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  Rows r{.logits = Tensor::Empty(DType::kF32, {rows, vocab}), .params = std::vector<SamplingParams>(rows)};
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  for (int i = 0; i < rows; ++i) {
    float* l = r.logits.Row<float>(i);
    std::normal_distribution<float> normal(0.0f, 1.0f + i % 5);
    for (int t = 0; t < vocab; ++t) l[t] = i % 3 == 0 ? std::round(normal(rng) * 4) / 4 : normal(rng);
    if (i % 17 == 5) l[token(rng)] = -INFINITY;
    if (i % 19 == 7) l[token(rng)] = NAN;
    if (i == 11) l[token(rng)] = INFINITY;
    if (i == 13) std::fill(l, l + vocab, -INFINITY);  // nothing can be chosen
    SamplingParams& p = r.params[i];
    p = {.temperature = std::array{0.0f, 0.3f, 0.8f, 1.0f, 1.7f, 0.8f}[i % 6],
         .top_k = std::array{0, 1, 5, 50, 100000}[i % 5],
         .top_p = std::array{1.0f, 0.95f, 0.5f, 0.01f}[(i / 2) % 4],
         .min_p = std::array{0.0f, 0.0f, 0.05f}[i % 3],
         .logprobs = std::array{-1, 0, 3, 20}[(i / 3) % 4]};
    std::vector<int32_t> prompt, output, masked;
    if (i % 4 == 1) {
      p.repetition_penalty = 1.3f;
      p.presence_penalty = 0.5f;
      p.frequency_penalty = 0.25f;
      for (int k = 0; k < 12; ++k) prompt.push_back(token(rng));
      for (int k = 0; k < 20; ++k) output.push_back(token(rng));
    }
    if (i % 7 == 2) p.logit_bias = {{token(rng), 5.0f}, {token(rng), -100.0f}};
    if (i % 9 == 4) masked = {token(rng), token(rng)};
    AppendRow({.params = &p, .prompt = prompt, .output = output, .masked_tokens = masked,
               .seed = seed * 100003u + i, .choice = i % 3},
              r.sampling);
  }
  return r;
}

// Equal to float rounding where finite; the same infinity, or both NaN, where not.
void ExpectSameLogprob(float gpu, float cpu, const std::string& where) {
  if (std::isfinite(cpu)) {
    EXPECT_NEAR(gpu, cpu, 1e-4) << where;
  } else {
    EXPECT_TRUE(gpu == cpu || (std::isnan(gpu) && std::isnan(cpu))) << where << ": GPU " << gpu << ", CPU " << cpu;
  }
}

// Every row's token, logprob and top logprobs from both samplers.
void ExpectSameSamples(const Rows& r, const StepSamples& gpu, const std::string& what) {
  StepSamples cpu;
  cpu::SampleRows(r.logits, r.sampling, cpu);
  ASSERT_EQ(gpu.tokens.size(), cpu.tokens.size());
  ASSERT_EQ(gpu.top_n, cpu.top_n);
  int mismatched = 0;
  for (int i = 0; i < r.sampling.num_rows(); ++i) {
    const bool same = gpu.tokens[i] == cpu.tokens[i];
    mismatched += !same;
    EXPECT_TRUE(same) << what << " row " << i << ": GPU token " << gpu.tokens[i] << ", CPU " << cpu.tokens[i];
    if (!same) continue;
    ExpectSameLogprob(gpu.logprobs[i], cpu.logprobs[i], what + " row " + std::to_string(i));
    const int n = r.sampling.rows[i].top_logprobs;
    for (int j = 0; j < n; ++j) {
      const TokenLogprob g = gpu.top_of(i, n)[j], c = cpu.top_of(i, n)[j];
      EXPECT_EQ(g.token, c.token) << what << " row " << i << " top " << j;
      ExpectSameLogprob(g.logprob, c.logprob, what + " row " + std::to_string(i) + " top " + std::to_string(j));
    }
  }
  EXPECT_EQ(mismatched, 0) << what;
}

TEST(CudaSampler, EqualsTheCpuSamplerTokenForToken) {
  MOE_REQUIRE_GPU();
  int rows = 0;
  // 10,000 rows in all, over small and odd vocabularies (the emulator's reach).
  for (const auto& [count, vocab] : std::array<std::pair<int, int>, 4>{{{4000, 37}, {3000, 256}, {2000, 1000}, {1000, 4099}}}) {
    const Rows r = MixedRows(count, vocab, /*seed=*/vocab);
    ExpectSameSamples(r, SampleOnDevice(r.logits, r.sampling), "vocab " + std::to_string(vocab));
    rows += count;
  }
  EXPECT_EQ(rows, 10000);
}

TEST(CudaSampler, EqualsTheCpuSamplerAtAFullVocabulary) {
  MOE_REQUIRE_GPU();
  const Rows r = MixedRows(24, 151936, /*seed=*/3);
  ExpectSameSamples(r, SampleOnDevice(r.logits, r.sampling), "vocab 151936");
}

// The CPU sampler's chi-square cases (tests/sampler_test.cc), drawn on the device: one row
// per draw, each with its own seed.
const std::vector<float> kLogits = {1.0f, 2.5f, 0.3f, 2.0f, -1.0f, 1.7f, 0.0f, 2.4f};

double ChiSquareOnDevice(const SamplingParams& params, const std::vector<bool>& keep, float temperature) {
  constexpr int kDraws = 8000;
  const int V = static_cast<int>(kLogits.size());
  Tensor logits = Tensor::Empty(DType::kF32, {kDraws, V});
  SamplingBatch sampling;
  for (int i = 0; i < kDraws; ++i) {
    std::copy(kLogits.begin(), kLogits.end(), logits.Row<float>(i));
    AppendRow({.params = &params, .seed = 1000u + i}, sampling);
  }
  const StepSamples s = SampleOnDevice(logits, sampling);
  std::vector<double> expected(V, 0.0);
  double z = 0;
  for (int t = 0; t < V; ++t) {
    if (keep[t]) z += expected[t] = std::exp(kLogits[t] / temperature);
  }
  std::vector<int> counts(V, 0);
  for (int32_t token : s.tokens) {
    if (token >= 0 && token < V) ++counts[token];
  }
  double chi2 = 0;
  for (int t = 0; t < V; ++t) {
    if (!keep[t]) {
      EXPECT_EQ(counts[t], 0) << "token " << t << " is outside the distribution";
      continue;
    }
    const double e = expected[t] / z * kDraws;
    chi2 += (counts[t] - e) * (counts[t] - e) / e;
  }
  return chi2;
}

// Chi-square critical value for 7 degrees of freedom at p = 0.001 (looser for fewer).
constexpr double kChiSquareBound = 24.32;

TEST(CudaSampler, DrawsMatchTheExactDistributions) {
  MOE_REQUIRE_GPU();
  const std::vector<bool> all(8, true);
  for (float t : {0.5f, 1.0f, 1.7f}) {
    EXPECT_LT(ChiSquareOnDevice({.temperature = t}, all, t), kChiSquareBound) << "T=" << t;
  }
  const std::vector<bool> top3 = {false, true, false, true, false, false, false, true};
  EXPECT_LT(ChiSquareOnDevice({.top_k = 3}, top3, 1.0f), kChiSquareBound) << "top-k";
  EXPECT_LT(ChiSquareOnDevice({.top_p = 0.7f}, top3, 1.0f), kChiSquareBound) << "top-p";
  const std::vector<bool> min_p = {false, true, false, true, false, true, false, true};
  EXPECT_LT(ChiSquareOnDevice({.min_p = 0.4f}, min_p, 1.0f), kChiSquareBound) << "min-p";
}

TEST(CudaSampler, RejectsWhatDoesNotFit) {
  MOE_REQUIRE_GPU();
  auto sampler = DeviceSampler::Create({.max_rows = 2, .vocab_size = 8, .max_top_logprobs = 2});
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  SamplingBatch three;
  for (int i = 0; i < 3; ++i) three.rows.push_back({});
  EXPECT_FALSE(sampler->Fits(three));
  EXPECT_EQ(sampler->Upload(three, 3, nullptr).code(), absl::StatusCode::kInvalidArgument);
  SamplingBatch wide;
  wide.rows.push_back({.top_logprobs = 3});
  EXPECT_FALSE(sampler->Fits(wide));
  EXPECT_EQ(sampler->Upload(wide, 1, nullptr).code(), absl::StatusCode::kInvalidArgument);
  SamplingBatch outside;
  outside.rows.push_back({.adjustments_begin = 0, .adjustments_end = 4});
  EXPECT_EQ(sampler->Upload(outside, 1, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe
