// The sampler against exact distributions (chi-square at fixed seeds), and its
// deterministic parts: greedy, penalties, bias, masks, logprobs, Philox.
#include "runtime/engine/sampler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <map>
#include <random>

#include "gtest/gtest.h"
#include "runtime/cpu/log_sum_exp.h"
#include "runtime/philox.h"
#include "runtime/sampling_math.h"

namespace moe {
namespace {

const std::vector<float> kLogits = {1.0f, 2.5f, 0.3f, 2.0f, -1.0f, 1.7f, 0.0f, 2.4f};

// Exact probabilities: softmax(logits / T) over the tokens `keep` allows, renormalized.
std::vector<double> Expected(float temperature, const std::vector<bool>& keep) {
  std::vector<double> p(kLogits.size(), 0.0);
  double z = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (keep[i]) z += p[i] = std::exp(kLogits[i] / temperature);
  }
  for (double& x : p) x /= z;
  return p;
}

// Draws many tokens with different seeds and returns the chi-square statistic; a token the
// distribution excludes must never appear.
double ChiSquare(const SamplingParams& params, const std::vector<double>& expected, int draws = 40000) {
  Sampler sampler;
  std::vector<int> counts(kLogits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    const Sampled s = sampler.Sample({.logits = kLogits, .params = &params, .seed = 1000u + i});
    ++counts[s.token];
  }
  double chi2 = 0;
  for (size_t t = 0; t < counts.size(); ++t) {
    if (expected[t] == 0) {
      EXPECT_EQ(counts[t], 0) << "token " << t << " is outside the distribution";
      continue;
    }
    const double e = expected[t] * draws;
    chi2 += (counts[t] - e) * (counts[t] - e) / e;
  }
  return chi2;
}

// Chi-square critical value for 7 degrees of freedom at p = 0.001; fewer categories make
// the bound looser, so it holds for every case below.
constexpr double kChiSquareBound = 24.32;

TEST(SamplerTest, TemperatureMatchesSoftmax) {
  for (float t : {0.5f, 1.0f, 1.7f}) {
    SamplingParams p{.temperature = t};
    EXPECT_LT(ChiSquare(p, Expected(t, std::vector<bool>(8, true))), kChiSquareBound) << "T=" << t;
  }
}

TEST(SamplerTest, TopKKeepsTheKMostLikely) {
  SamplingParams p{.temperature = 1.0f, .top_k = 3};  // tokens 1 (2.5), 7 (2.4), 3 (2.0)
  EXPECT_LT(ChiSquare(p, Expected(1.0f, {false, true, false, true, false, false, false, true})),
            kChiSquareBound);
}

TEST(SamplerTest, TopPKeepsTheSmallestNucleus) {
  // Sorted probabilities at T=1: 1 .276, 7 .250, 3 .167, 5 .124, 0 .061, ... -> p = 0.6
  // needs tokens 1, 7 and 3 (0.693 >= 0.6), not 5.
  SamplingParams p{.temperature = 1.0f, .top_p = 0.6f};
  EXPECT_LT(ChiSquare(p, Expected(1.0f, {false, true, false, true, false, false, false, true})),
            kChiSquareBound);
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheBest) {
  // At T=1, p(t)/p(max) = exp(l - 2.5): keep >= 0.3 -> logits >= 2.5 + ln 0.3 = 1.296.
  SamplingParams p{.temperature = 1.0f, .min_p = 0.3f};
  EXPECT_LT(ChiSquare(p, Expected(1.0f, {false, true, false, true, false, true, false, true})),
            kChiSquareBound);
}

TEST(SamplerTest, SeededDrawsDependOnlyOnSeedStepAndChoice) {
  // Sampler `a` also serves other requests in between (as in a batch); `b` does not.
  Sampler a, b;
  SamplingParams p{.temperature = 1.0f};
  SamplingParams other{.temperature = 0.7f, .top_k = 3, .repetition_penalty = 1.3f};
  std::vector<int32_t> output;
  std::map<int32_t, int> seen;
  for (int step = 0; step < 50; ++step) {
    a.Sample({.logits = kLogits, .params = &other, .prompt = output, .seed = 99u + step});
    const Sampled x = a.Sample({.logits = kLogits, .params = &p, .output = output, .seed = 7});
    const Sampled y = b.Sample({.logits = kLogits, .params = &p, .output = output, .seed = 7});
    EXPECT_EQ(x.token, y.token);
    ++seen[x.token];
    output.push_back(x.token);
  }
  EXPECT_GT(seen.size(), 3u);  // the counter advances with each output token
  int differ = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    differ += a.Sample({.logits = kLogits, .params = &p, .seed = seed, .choice = 0}).token !=
              a.Sample({.logits = kLogits, .params = &p, .seed = seed, .choice = 1}).token;
  }
  EXPECT_GT(differ, 5) << "choices of one request must draw independently";
}

TEST(SamplerTest, GreedyWithPenaltiesBiasAndMasks) {
  Sampler s;
  SamplingParams greedy{.temperature = 0.0f};
  EXPECT_EQ(s.Sample({.logits = kLogits, .params = &greedy}).token, 1);
  const std::vector<int32_t> masked = {1};
  EXPECT_EQ(s.Sample({.logits = kLogits, .params = &greedy, .masked_tokens = masked}).token, 7);
  SamplingParams biased{.temperature = 0.0f, .logit_bias = {{4, 10.0f}}};
  EXPECT_EQ(s.Sample({.logits = kLogits, .params = &biased}).token, 4);
  // Repetition penalty 2 halves 2.5 -> 1.25 and 2.4 -> 1.2: token 3 (2.0) wins.
  SamplingParams rep{.temperature = 0.0f, .repetition_penalty = 2.0f};
  const std::vector<int32_t> prompt = {1}, output = {7};
  EXPECT_EQ(s.Sample({.logits = kLogits, .params = &rep, .prompt = prompt, .output = output}).token, 3);
  // Frequency 0.3 x 2 occurrences + presence 0.1: 2.5 -> 1.8, so 2.4 (token 7) wins.
  SamplingParams freq{.temperature = 0.0f, .presence_penalty = 0.1f, .frequency_penalty = 0.3f};
  const std::vector<int32_t> twice = {1, 1};
  EXPECT_EQ(s.Sample({.logits = kLogits, .params = &freq, .output = twice}).token, 7);
}

TEST(SamplerTest, LogprobsAreLogSoftmaxOfRawLogits) {
  Sampler s;
  SamplingParams p{.temperature = 0.0f, .repetition_penalty = 3.0f, .logprobs = 2};
  const std::vector<int32_t> prompt = {1};
  const Sampled out = s.Sample({.logits = kLogits, .params = &p, .prompt = prompt});
  ASSERT_TRUE(out.logprobs.has_value());
  double z = 0;
  for (float l : kLogits) z += std::exp(l);
  EXPECT_NEAR(out.logprobs->chosen.logprob, kLogits[out.token] - std::log(z), 1e-5);
  ASSERT_EQ(out.logprobs->top.size(), 2u);
  EXPECT_EQ(out.logprobs->top[0].token, 1);
  EXPECT_EQ(out.logprobs->top[1].token, 7);
  EXPECT_NEAR(out.logprobs->top[0].logprob, 2.5 - std::log(z), 1e-5);
}

TEST(SamplerTest, InfiniteAndNanLogitsNeverBecomeAnArbitraryToken) {
  Sampler sampler;
  const SamplingParams greedy{.temperature = 0.0f};
  const SamplingParams hot{.temperature = 0.7f};
  const std::vector<float> inf = {1, 2, INFINITY, 0};
  EXPECT_EQ(sampler.Sample({.logits = inf, .params = &greedy}).token, 2);
  EXPECT_EQ(sampler.Sample({.logits = inf, .params = &hot, .seed = 5}).token, 2);
  const std::vector<float> nan_first = {NAN, 1, 3, 2};
  EXPECT_EQ(sampler.Sample({.logits = nan_first, .params = &greedy}).token, 2);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    EXPECT_NE(sampler.Sample({.logits = nan_first, .params = &hot, .seed = seed}).token, 0);
  }
  const std::vector<float> nothing = {NAN, -INFINITY, NAN};
  EXPECT_EQ(sampler.Sample({.logits = nothing, .params = &greedy}).token, -1);
  EXPECT_EQ(sampler.Sample({.logits = nothing, .params = &hot, .seed = 1}).token, -1);
  const SamplingParams with_logprobs{.temperature = 0.0f, .logprobs = 2};
  EXPECT_FALSE(sampler.Sample({.logits = nothing, .params = &with_logprobs}).logprobs.has_value());
}

TEST(PhiloxTest, KnownAnswer) {
  // Random123's published vector for philox4x32-10, counter 0 and key 0.
  const auto r = Philox4x32(0, {0, 0, 0, 0});
  EXPECT_EQ(r[0], 0x6627e8d5u);
  EXPECT_EQ(r[1], 0xe169c58du);
  EXPECT_EQ(r[2], 0xbc57ac4cu);
  EXPECT_EQ(r[3], 0x9b00dbd8u);
}

// The vectorized log-sum-exp behind every logprob and every choice's confidence, against
// a double-precision reference, at a real vocabulary size and at odd sizes (the tails).
TEST(LogSumExpTest, MatchesDoublePrecisionAtRealAndOddSizes) {
  std::mt19937 rng(7);
  std::normal_distribution<float> logit(0.0f, 4.0f);
  for (int size : {1, 15, 17, 1024, 1031, 151936}) {
    std::vector<float> logits(size);
    for (float& l : logits) l = logit(rng);
    logits[size / 2] = 30.0f;  // one dominant token
    double max = -INFINITY, sum = 0;
    for (float l : logits) max = std::max<double>(max, l);
    for (float l : logits) sum += std::exp(double{l} - max);
    EXPECT_NEAR(cpu::LogSumExp(logits), max + std::log(sum), 2e-5) << "size " << size;
  }
}

TEST(LogSumExpTest, InfinitiesAndVeryNegativeLogits) {
  EXPECT_EQ(cpu::LogSumExp(std::vector<float>{-INFINITY, -INFINITY}), -INFINITY);
  EXPECT_EQ(cpu::LogSumExp(std::vector<float>{1.0f, INFINITY}), INFINITY);
  // -inf entries add nothing; a logit 200 below the max adds nothing measurable.
  EXPECT_NEAR(cpu::LogSumExp(std::vector<float>{0.0f, -INFINITY, -200.0f}), 0.0f, 1e-6);
  EXPECT_NEAR(cpu::LogSumExp(std::vector<float>{3.0f, 3.0f}), 3.0f + std::log(2.0f), 1e-6);
}

TEST(SamplerTest, TheChosenLogprobIsAlwaysSetAndEqualsTheReportedOne) {
  Sampler sampler;
  SamplingParams greedy{.temperature = 0.0f};
  const Sampled plain = sampler.Sample({.logits = kLogits, .params = &greedy});
  double z = 0;
  for (float l : kLogits) z += std::exp(double{l});
  EXPECT_NEAR(plain.logprob, kLogits[plain.token] - std::log(z), 1e-5);
  EXPECT_FALSE(plain.logprobs.has_value());
  SamplingParams with_logprobs{.temperature = 0.0f, .logprobs = 2};
  const Sampled reported = sampler.Sample({.logits = kLogits, .params = &with_logprobs});
  EXPECT_EQ(reported.logprob, reported.logprobs->chosen.logprob);
}

}  // namespace
}  // namespace moe

namespace moe {
namespace {

// The algorithm of runtime/sampling_math.h written plainly: scalar keys, thresholds by
// sorting, a linear walk. The CPU sampler's vector passes and radix select must give the
// same token for every row (and the CUDA sampler must give the CPU's).
int32_t ReferenceDraw(const std::vector<float>& logits, const RowSampling& row) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  std::vector<uint32_t> keys(logits.size());
  for (size_t t = 0; t < logits.size(); ++t) keys[t] = sampling::KeyOf(logits[t], max_logit, row.inv_temperature);
  uint32_t threshold = std::max(row.min_key, sampling::kSmallestKey);
  std::vector<uint32_t> kept;
  for (uint32_t k : keys) {
    if (k >= threshold) kept.push_back(k);
  }
  std::sort(kept.rbegin(), kept.rend());  // largest first
  if (row.top_k > 0 && row.top_k < static_cast<int>(kept.size())) {
    threshold = kept[row.top_k - 1];
    while (!kept.empty() && kept.back() < threshold) kept.pop_back();
  }
  if (row.top_p_fraction < RowSampling::kFullFraction) {
    uint64_t total = 0;
    for (uint32_t k : kept) total += sampling::WeightOfKey(k);
    const uint64_t target = std::max<uint64_t>(sampling::ScaleByFraction(total, row.top_p_fraction), 1);
    uint64_t running = 0;
    for (uint32_t k : kept) {  // the first key (largest first) whose running weight reaches the target
      running += sampling::WeightOfKey(k);
      if (running >= target) {
        threshold = std::max(threshold, k);
        break;
      }
    }
  }
  uint64_t kept_weight = 0;
  for (uint32_t k : keys) kept_weight += k >= threshold ? sampling::WeightOfKey(k) : 0;
  const uint64_t r = sampling::ScaleByFraction(kept_weight, PhiloxBits24(row.seed, row.output_index, row.choice));
  uint64_t running = 0;
  for (size_t t = 0; t < keys.size(); ++t) {
    running += keys[t] >= threshold ? sampling::WeightOfKey(keys[t]) : 0;
    if (running > r) return static_cast<int32_t>(t);
  }
  return -1;
}

// The CPU sampler computes a key's weight as the float it is, floor(p * 2^40), by a multiply
// and a conversion: equal to WeightOfKey's shifts for every key there is.
TEST(SamplerTest, AKeysWeightIsItsProbabilityTimesTwoToTheFortyTruncated) {
  uint64_t mismatches = 0;
  uint32_t first = 0;
  for (uint32_t key = 0; key <= sampling::kKeyOfOne; ++key) {
    const bool equal = static_cast<uint64_t>(std::bit_cast<float>(key) * 0x1p40f) == sampling::WeightOfKey(key);
    if (!equal && mismatches++ == 0) first = key;
  }
  EXPECT_EQ(mismatches, 0u) << "first at key " << first;
}

TEST(SamplerTest, RowSamplerEqualsThePlainAlgorithmTokenForToken) {
  std::mt19937 rng(5);
  cpu::RowSampler sampler;
  int rows = 0;
  for (int vocab : {37, 1000, 20011}) {
    std::vector<float> logits(vocab);
    for (int trial = 0; trial < 120; ++trial) {
      // Spread and ties vary: wide normals, and coarse grids where many tokens share a value.
      std::normal_distribution<float> normal(0.0f, 1.0f + trial % 5);
      for (float& l : logits) l = trial % 3 == 0 ? std::round(normal(rng) * 4) / 4 : normal(rng);
      SamplingParams params{.temperature = std::array{0.3f, 0.8f, 1.0f, 1.7f}[trial % 4],
                            .top_k = std::array{0, 1, 5, 50, 100000}[trial % 5],
                            .top_p = std::array{1.0f, 0.95f, 0.5f, 0.01f}[(trial / 2) % 4],
                            .min_p = std::array{0.0f, 0.0f, 0.05f}[trial % 3]};
      SamplingBatch batch;
      AppendRow({.params = &params, .seed = uint64_t(trial), .choice = trial % 2}, batch);
      const RowSampling& row = batch.rows[0];
      const cpu::RowSampler::Result got = sampler.Sample(logits, row, {}, {});
      EXPECT_EQ(got.token, ReferenceDraw(logits, row)) << "vocab " << vocab << " trial " << trial;
      ++rows;
    }
  }
  EXPECT_EQ(rows, 360);
}

TEST(SamplerTest, DrawsOverAFineGridOfLogitGapsEqualThePlainAlgorithm) {
  // Every difference l - max on a fine grid, through the sampler's vector exp and the scalar
  // sampling::KeyOf, at several temperatures: the greedy draw of T -> 0 aside, keys decide.
  std::vector<float> logits;
  for (float d = -100.0f; d <= 0.0f; d += 0.0013f) logits.push_back(d);
  logits.push_back(-INFINITY);
  logits.push_back(NAN);
  for (float inv_t : {1.0f, 1.25f, 0.37f, 7.0f}) {
    // A top-k of 1 keeps only the largest key; walking each token to the top of the list
    // through the threshold would be slow, so compare whole-row draws over many seeds.
    for (uint64_t seed = 0; seed < 20; ++seed) {
      const RowSampling row{.greedy = false, .inv_temperature = inv_t, .min_key = sampling::kSmallestKey, .seed = seed};
      cpu::RowSampler sampler;
      EXPECT_EQ(sampler.Sample(logits, row, {}, {}).token, ReferenceDraw(logits, row)) << inv_t << " " << seed;
    }
  }
}

// Top-p where the nucleus is mostly a long tail of tiny keys (below every cutoff the CPU
// sampler first tries), and where it is a few large ones: both equal the plain algorithm.
TEST(SamplerTest, TopPOverALongTailOrAFewLargeKeysEqualsThePlainAlgorithm) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> jitter(-0.5f, 0.5f);
  for (const float tail : {-12.0f, -3.0f}) {
    std::vector<float> logits(100000);
    for (float& l : logits) l = tail + jitter(rng);
    for (int t = 0; t < 100; t += 7) logits[t] = jitter(rng);
    for (const float top_p : {0.99f, 0.9f, 0.5f, 0.1f}) {
      for (uint64_t seed = 0; seed < 8; ++seed) {
        SamplingParams params{.temperature = 1.0f, .top_p = top_p};
        SamplingBatch batch;
        AppendRow({.params = &params, .seed = seed}, batch);
        cpu::RowSampler sampler;
        EXPECT_EQ(sampler.Sample(logits, batch.rows[0], {}, {}).token, ReferenceDraw(logits, batch.rows[0]))
            << "tail " << tail << " top_p " << top_p << " seed " << seed;
      }
    }
  }
}

}  // namespace
}  // namespace moe
