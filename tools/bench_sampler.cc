// bench-sampler: what sampling one row costs at a real vocabulary size, on this CPU: the
// log-sum-exp every row pays (each choice's confidence), and greedy, top-p and top-k draws.
// A measuring program, not a test.
//
//   bench-sampler --vocab 151936 --rows 2000
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/time/clock.h"
#include "runtime/engine/sampler.h"
#include "runtime/cpu/log_sum_exp.h"

ABSL_FLAG(int, vocab, 151936, "logits per row (Qwen3's vocabulary by default)");
ABSL_FLAG(int, rows, 2000, "rows timed per case");

namespace moe {
namespace {

template <class F>
double MicrosPerRow(int rows, F f) {
  const absl::Time start = absl::Now();
  for (int i = 0; i < rows; ++i) f(i);
  return absl::ToDoubleMicroseconds(absl::Now() - start) / rows;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "What sampling one row costs on this CPU: bench-sampler --vocab 151936");
  const int V = absl::GetFlag(FLAGS_vocab), rows = absl::GetFlag(FLAGS_rows);
  std::mt19937 rng(1);
  std::normal_distribution<float> logit(0.0f, 3.0f);
  std::vector<float> logits(V);
  for (float& l : logits) l = logit(rng);
  volatile float sink = 0;
  std::printf("vocab %d, %d rows per case (us per row)\n", V, rows);
  std::printf("  log-sum-exp (every row)    %8.1f\n",
              moe::MicrosPerRow(rows, [&](int) { sink = sink + moe::cpu::LogSumExp(logits); }));
  // The same in double with std::exp, as the sampler computed logprobs before: the baseline.
  std::printf("  log-sum-exp, double exp    %8.1f\n", moe::MicrosPerRow(rows, [&](int) {
                const float max_logit = *std::max_element(logits.begin(), logits.end());
                double sum = 0;
                for (float l : logits) sum += std::exp(double{l} - max_logit);
                sink = sink + max_logit + static_cast<float>(std::log(sum));
              }));
  moe::Sampler sampler;
  const std::pair<const char*, moe::SamplingParams> cases[] = {
      {"greedy", {.temperature = 0.0f}},
      {"temperature 0.8", {.temperature = 0.8f}},
      {"top_p 0.9", {.temperature = 0.8f, .top_p = 0.9f}},
      {"top_k 50", {.temperature = 0.8f, .top_k = 50}},
      {"greedy + 5 logprobs", {.temperature = 0.0f, .logprobs = 5}},
  };
  for (const auto& [name, params] : cases) {
    std::printf("  sample: %-18s %8.1f\n", name, moe::MicrosPerRow(rows, [&](int i) {
                  sink = sink + sampler.Sample({.logits = logits, .params = &params, .seed = uint64_t(i)}).token;
                }));
  }
  return 0;
}
