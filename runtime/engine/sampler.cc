#include "runtime/engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "runtime/sampling_math.h"

namespace moe {
namespace {

constexpr float kSmallestProbability = 0x1p-40f;  // lighter tokens weigh 0 (sampling_math.h)
constexpr float kLargestInverseTemperature = 1e30f;  // a tiny T is greedy in all but name

RowSampling RowOf(const SampleInput& in) {
  const SamplingParams& p = *in.params;
  RowSampling row{.greedy = p.greedy(), .top_k = std::max(p.top_k, 0)};
  if (!row.greedy) row.inv_temperature = std::min(1.0f / p.temperature, kLargestInverseTemperature);
  if (p.top_p < 1.0f) {
    const float fraction = std::round(p.top_p * static_cast<float>(RowSampling::kFullFraction));
    row.top_p_fraction = static_cast<uint32_t>(std::clamp(fraction, 1.0f, float(RowSampling::kFullFraction)));
  }
  row.min_key = sampling::FloatBits(std::max(p.min_p, kSmallestProbability));
  row.repetition_penalty = p.repetition_penalty;
  row.presence_penalty = p.presence_penalty;
  row.frequency_penalty = p.frequency_penalty;
  row.seed = in.seed;
  row.output_index = in.output.size();
  row.choice = static_cast<uint32_t>(in.choice);
  row.top_logprobs = std::max(p.logprobs, 0);
  return row;
}

}  // namespace

void AppendRow(const SampleInput& in, SamplingBatch& batch) {
  const SamplingParams& p = *in.params;
  RowSampling row = RowOf(in);
  std::vector<TokenAdjustment>& adjustments = batch.adjustments;
  const size_t begin = adjustments.size();
  for (int32_t t : in.masked_tokens) adjustments.push_back({.token = t, .masked = true});
  for (const auto& [t, bias] : p.logit_bias) adjustments.push_back({.token = t, .bias = bias});
  if (p.repetition_penalty != 1.0f) {
    for (int32_t t : in.prompt) adjustments.push_back({.token = t, .seen = true});
    for (int32_t t : in.output) adjustments.push_back({.token = t, .seen = true});
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    for (int32_t t : in.output) adjustments.push_back({.token = t, .output_count = 1});
  }
  // Each token once, in token order; a token's biases add up in the order they were given.
  std::stable_sort(adjustments.begin() + begin, adjustments.end(),
                   [](const TokenAdjustment& a, const TokenAdjustment& b) { return a.token < b.token; });
  size_t end = begin;
  for (size_t i = begin; i < adjustments.size(); ++i) {
    const TokenAdjustment& a = adjustments[i];
    if (end > begin && adjustments[end - 1].token == a.token) {
      TokenAdjustment& merged = adjustments[end - 1];
      merged.bias += a.bias;
      merged.output_count += a.output_count;
      merged.seen |= a.seen;
      merged.masked |= a.masked;
    } else {
      adjustments[end++] = a;
    }
  }
  adjustments.resize(end);
  row.adjustments_begin = static_cast<int32_t>(begin);
  row.adjustments_end = static_cast<int32_t>(end);
  batch.rows.push_back(row);
}

Sampled SampledRow(const StepSamples& samples, int row, const SamplingParams& params) {
  Sampled out{.token = samples.tokens[row], .logprob = samples.logprobs[row]};
  if (out.token >= 0 && params.logprobs >= 0) {
    out.logprobs = SampledLogprobs{.chosen = {out.token, out.logprob}};
    for (const TokenLogprob& t : samples.top_of(row, params.logprobs)) {
      if (t.token >= 0) out.logprobs->top.push_back(t);  // -1: the vocabulary is smaller than n
    }
  }
  return out;
}

Sampled Sampler::Sample(const SampleInput& in) {
  batch_.rows.clear();
  batch_.adjustments.clear();
  AppendRow(in, batch_);
  samples_.Resize(1, batch_.max_top_logprobs());
  const cpu::RowSampler::Result r =
      row_.Sample(in.logits, batch_.rows[0], batch_.adjustments_of(0), absl::MakeSpan(samples_.top));
  samples_.tokens[0] = r.token;
  samples_.logprobs[0] = r.logprob;
  return SampledRow(samples_, 0, *in.params);
}

}  // namespace moe
