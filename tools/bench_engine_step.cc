// bench-engine-step: the engine's host time per step with many running sequences, the
// work that surrounds the model: scheduling, building the StepBatch, sampling, appending,
// stop checks and output callbacks. The model is a stand-in that returns ready logits, so
// nothing else is measured; its vocabulary is small so the (GPU-bound, later) sampler's
// per-vocabulary cost does not hide the bookkeeping, and the sampler is timed separately.
//
//   bench-engine-step [--seqs 256,1024] [--steps 200] [--vocab 32]
#include <omp.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/sampler.h"

ABSL_FLAG(std::vector<std::string>, seqs, (std::vector<std::string>{"256", "1024"}),
          "running sequences to measure");
ABSL_FLAG(int, steps, 200, "decode steps measured per point");
ABSL_FLAG(int, vocab, 32, "vocabulary of the stand-in model");

namespace {

// Returns the same logits for every row it is asked for; touches no KV cache.
class ReadyLogitsModel final : public moe::Model {
 public:
  explicit ReadyLogitsModel(int vocab) {
    info_ = {.architecture = "ReadyLogits", .vocab_size = vocab, .num_layers = 1,
             .num_kv_heads = 1, .head_dim = 2, .max_context = 1 << 20, .eos_token_ids = {0}};
  }
  const moe::ModelInfo& info() const override { return info_; }
  absl::StatusOr<moe::Tensor> Forward(const moe::StepBatch& batch, moe::KvCache&) override {
    const int64_t rows = batch.logits_rows.size();
    if (logits_.dim(0) != rows) {
      logits_ = moe::Tensor::Empty(moe::DType::kF32, {rows, info_.vocab_size});
      for (int64_t i = 0; i < logits_.numel(); ++i) logits_.data<float>()[i] = static_cast<float>((i * 7919) % 101);
    }
    return logits_;
  }

 private:
  moe::ModelInfo info_;
  moe::Tensor logits_ = moe::Tensor::Empty(moe::DType::kF32, {0, 1});
};

class CountingSink final : public moe::OutputSink {
 public:
  void OnDelta(const moe::OutputDelta& d) override { tokens += d.token_ids.size(); }
  void OnFinal(const moe::FinalOutput&) override {}
  int64_t tokens = 0;
};

void Measure(int num_seqs, int steps, int vocab) {
  ReadyLogitsModel model(vocab);
  auto created = moe::Engine::Create(model, {.num_kv_blocks = num_seqs * 64, .block_size = 16,
                                            .scheduler = {.max_num_batched_tokens = 8 * num_seqs,
                                                          .max_num_seqs = num_seqs}});
  if (!created.ok()) std::abort();
  moe::Engine& engine = **created;
  auto sink = std::make_shared<CountingSink>();
  for (int i = 0; i < num_seqs; ++i) {
    moe::Request r{.id = std::to_string(i), .prompt = std::vector<int32_t>(8, 1 + i % (vocab - 1))};
    r.sampling.temperature = 0.0f;
    r.stopping = {.max_tokens = steps + 100, .ignore_eos = true};
    if (!engine.Submit(r, sink).ok()) std::abort();
  }
  for (int i = 0; i < 5; ++i) (void)engine.Step();  // prefill and warm-up
  const moe::EngineStats before = engine.GetStats();
  for (int i = 0; i < steps; ++i) (void)engine.Step();
  const moe::EngineStats after = engine.GetStats();
  auto per_step = [&](absl::Duration a, absl::Duration b) { return absl::ToDoubleMicroseconds(b - a) / steps; };
  const auto& t0 = before.phase_times;
  const auto& t1 = after.phase_times;
  const double schedule = per_step(t0.schedule, t1.schedule);
  const double build = per_step(t0.build_batch, t1.build_batch);
  const double post = per_step(t0.postprocess, t1.postprocess);
  std::cout << absl::StrFormat(
      "%5d seqs: schedule %7.1f us  build batch %7.1f us  postprocess %7.1f us  "
      "host total %7.1f us/step (%.3f us/seq)\n",
      num_seqs, schedule, build, post, schedule + build + post, (schedule + build + post) / num_seqs);
}

// The greedy sampler on a real vocabulary, per row (what the GPU sampler will take over).
void MeasureSampler(int vocab) {
  std::vector<float> logits(vocab);
  for (int i = 0; i < vocab; ++i) logits[i] = static_cast<float>((i * 7919) % 1009) / 100.0f;
  moe::Sampler sampler;
  moe::SamplingParams greedy{.temperature = 0.0f}, random{.temperature = 0.8f, .top_p = 0.95f};
  for (const auto* params : {&greedy, &random}) {
    const int rows = params == &greedy ? 1000 : 200;
    sampler.Sample({.logits = logits, .params = params});  // the sampler's buffers grow once, untimed
    const absl::Time start = absl::Now();
    for (int i = 0; i < rows; ++i) sampler.Sample({.logits = logits, .params = params, .seed = uint64_t(i)});
    std::cout << absl::StrFormat("sampler, vocab %d, %s: %.1f us/row\n", vocab,
                                 params == &greedy ? "greedy" : "T=0.8 top-p 0.95",
                                 absl::ToDoubleMicroseconds(absl::Now() - start) / rows);
  }
  // A decode step's worth of rows at once, spread over the OpenMP threads.
  constexpr int kBatch = 256;
  moe::Tensor batch = moe::Tensor::Empty(moe::DType::kF32, {kBatch, vocab});
  for (int r = 0; r < kBatch; ++r) std::copy(logits.begin(), logits.end(), batch.Row<float>(r));
  for (const auto* params : {&greedy, &random}) {
    moe::SamplingBatch sampling;
    for (int r = 0; r < kBatch; ++r) moe::AppendRow({.params = params, .seed = uint64_t(r)}, sampling);
    moe::StepSamples out;
    const absl::Time start = absl::Now();
    moe::cpu::SampleRows(batch, sampling, out);
    std::cout << absl::StrFormat("sampler, batch %d rows on %d threads, %s: %.1f us/row\n", kBatch,
                                 omp_get_max_threads(), params == &greedy ? "greedy" : "T=0.8 top-p 0.95",
                                 absl::ToDoubleMicroseconds(absl::Now() - start) / kBatch);
  }
}

}  // namespace

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "Host time of one engine step around the model: bench-engine-step --seqs 256,1024");
  for (const std::string& n : absl::GetFlag(FLAGS_seqs)) {
    Measure(std::stoi(n), absl::GetFlag(FLAGS_steps), absl::GetFlag(FLAGS_vocab));
  }
  MeasureSampler(151936);
  return 0;
}
