// The whole model on the GPU against the CPU model: logits of every prompt position and
// every decode step, and identical greedy continuations, for every golden tiny model and a
// 4-layer model at Qwen3-30B-A3B shapes. Both backends load the same bf16 weights (the
// golden f32 checkpoints are rounded to bf16 first), so what differs is only the GPU's bf16
// activations, and, at near-ties of the router, which experts a token takes
// (RoutingRecorder). Skipped without a GPU.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "moe/cuda/cuda_moe_model.h"
#include "moe/moe_model.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
#include "tests/sequence_runner.h"
#include "tests/test_util.h"
#include "tools/random_model.h"
#include "runtime/engine/engine.h"
#include "tests/engine_test_util.h"
#ifdef MOE_CUDA_EMU
#include "tools/cuda_emu/emu_counters.h"
#endif

namespace moe {
namespace {

namespace fs = std::filesystem;

// max |cpu - gpu| / max |cpu| over a row of logits. bf16 activations through a few layers
// move logits by about 1% of their range.
constexpr double kMaxRelativeError = 3e-2;

double RelativeError(const std::vector<float>& expected, const std::vector<float>& actual) {
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double diff = std::fabs(double(expected[i]) - double(actual[i]));
    max_diff = std::isnan(diff) ? INFINITY : std::max(max_diff, diff);
    max_abs = std::max(max_abs, std::fabs(double(expected[i])));
  }
  return max_diff / std::max(max_abs, 1e-30);
}

// Copies a model directory with every floating tensor rounded to bf16.
void CopyAsBf16(const std::string& from, const std::string& to) {
  std::ifstream in(from + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["torch_dtype"] = "bfloat16";
  config.erase("dtype");
  std::ofstream(to + "/config.json") << config.dump(2);
  if (fs::exists(from + "/generation_config.json")) {
    fs::copy_file(from + "/generation_config.json", to + "/generation_config.json");
  }
  auto file = SafetensorsFile::Open(from + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<TensorSpec> specs;
  for (const std::string& name : (*file)->names()) {
    auto t = (*file)->Get(name);
    ASSERT_TRUE(t.ok()) << t.status();
    specs.push_back({name, DType::kBF16, t->shape()});
  }
  const absl::Status written = WriteSafetensors(
      to + "/model.safetensors", specs, [&](const TensorSpec& spec, absl::Span<std::byte> out) {
        const Tensor bf16 = (*file)->Get(spec.name)->To(DType::kBF16);
        std::memcpy(out.data(), bf16.raw(), out.size());
      });
  ASSERT_TRUE(written.ok()) << written;
}

// Where the two backends route a token to different experts, its logits differ by far more
// than the logit tolerance (6-12% in the tiny models), and the GPU routes from bf16
// activations while the CPU routes from f32 ones, so at near-ties of the router they may.
// Such swaps must be at near-ties: the reference's k-th chosen router logit is ahead of the
// best one left out by less than this fraction of the token's largest |router logit|.
constexpr float kMaxSwapMargin = 2e-2f;

// The experts each token was routed to in every MoE layer, as the model's own router
// logits choose them (moe::Route), filed by (prompt, position) over a greedy run.
class RoutingRecorder {
 public:
  struct Choice {
    std::vector<int32_t> experts;  // [K] ascending
    float margin = INFINITY;       // k-th chosen minus best left out, over max |logit|
  };
  using Token = std::map<int, Choice>;  // layer -> choice

  RoutingRecorder(size_t prompts, int top_k) : by_prompt_(prompts), params_{.top_k = top_k} {}

  // The model's router observer: one MoE layer of the step in flight.
  void Observe(int layer, const Tensor& router_logits) {
    const int64_t T = router_logits.dim(0), E = router_logits.dim(1), K = params_.top_k;
    const Routing routing = Route(router_logits, params_);
    step_.resize(T);
    std::vector<float> sorted(E);
    for (int64_t t = 0; t < T; ++t) {
      const float* logits = router_logits.Row<float>(t);
      Choice& c = step_[t][layer];
      c.experts.assign(routing.topk_ids.Row<int32_t>(t), routing.topk_ids.Row<int32_t>(t) + K);
      std::sort(c.experts.begin(), c.experts.end());
      if (K >= E) continue;  // every expert is chosen
      std::partial_sort_copy(logits, logits + E, sorted.begin(), sorted.end(), std::greater<float>());
      float scale = 0;
      for (int64_t e = 0; e < E; ++e) scale = std::max(scale, std::fabs(logits[e]));
      c.margin = (sorted[K - 1] - sorted[K]) / std::max(scale, 1e-30f);
    }
  }

  // GreedyOptions::after_step: files the step's choices under (prompt, position).
  void Record(const StepBatch& batch, const std::vector<int32_t>& prompt_of_seq) {
    for (int32_t s = 0; s < batch.num_seqs() && !step_.empty(); ++s) {
      for (int32_t t = batch.query_starts[s]; t < batch.query_starts[s + 1]; ++t) {
        by_prompt_[prompt_of_seq[s]][batch.positions[t]] = std::move(step_[t]);
      }
    }
    step_.clear();
  }

  const Token* Find(size_t prompt, int32_t position) const {
    const auto it = by_prompt_[prompt].find(position);
    return it == by_prompt_[prompt].end() ? nullptr : &it->second;
  }

 private:
  std::vector<std::map<int32_t, Token>> by_prompt_;  // [prompt] position -> token
  std::vector<Token> step_;                          // [T] of the step in flight
  RoutingParams params_;
};

// Observes a CPU or CUDA MoE model's routing for the next run (nullptr: stop observing).
void ObserveRouting(Model& model, RoutingRecorder* recorder) {
  RouterObserver observer;
  if (recorder != nullptr) {
    observer = [recorder](int layer, const Tensor& logits) { recorder->Observe(layer, logits); };
  }
  if (auto* cpu = dynamic_cast<MoeModel*>(&model)) cpu->set_router_observer(std::move(observer));
  if (auto* gpu = dynamic_cast<cuda::CudaMoeModel*>(&model)) gpu->set_router_observer(std::move(observer));
}

struct Comparison {
  double worst_prompt = 0, worst_step = 0;
  int rows = 0, steps = 0;  // logits rows compared; of those, decode steps
  int near_ties = 0;        // argmax flips at near-ties of the logits
  int swapped = 0;          // rows whose token the backends routed differently (at near-ties)
};

// Runs `expected` greedily, then `actual` on the same tokens (teacher forcing), and compares
// every kept logit row and every step's argmax. Greedy continuations are identical exactly
// when every argmax agrees. An argmax may differ only at a near-tie: where `expected` puts
// the other model's choice within the logit tolerance (bound * max |logit|) of its own,
// which the random tiny models do at a few steps (their top-2 margins go down to 0.2% of
// max |logit|). Near-ties are counted and printed. When `expected` is the CPU model, both
// models' routing is recorded (the GPU's then runs without graphs), and rows whose token
// the two routed differently are printed instead of held to the bound; each such swap must
// be at a near-tie of the CPU's router (kMaxSwapMargin).
Comparison CompareGreedy(Model& expected_model, Model& actual_model,
                         const std::vector<std::vector<int32_t>>& prompts, GreedyOptions options,
                         const std::string& what, double bound = kMaxRelativeError) {
  Comparison c;
  const auto* reference = dynamic_cast<const MoeModel*>(&expected_model);
  const int top_k = reference != nullptr ? reference->config().top_k : 0;
  RoutingRecorder expected_routing(prompts.size(), top_k), actual_routing(prompts.size(), top_k);
  // Runs `model` greedily, recording its routing when comparing against the CPU model.
  auto run = [&](Model& model, RoutingRecorder& routing) {
    if (reference != nullptr) {
      ObserveRouting(model, &routing);
      options.after_step = [&routing](const StepBatch& b, const std::vector<int32_t>& prompt_of_seq) {
        routing.Record(b, prompt_of_seq);
      };
    }
    auto out = RunGreedy(model, prompts, options);
    if (reference != nullptr) ObserveRouting(model, nullptr);
    return out;
  };
  auto expected = run(expected_model, expected_routing);
  EXPECT_TRUE(expected.ok()) << expected.status();
  if (!expected.ok()) return c;
  std::vector<std::vector<int32_t>> forced;
  for (const GreedyResult& r : expected->sequences) forced.push_back(r.tokens);
  options.forced_tokens = &forced;
  auto actual = run(actual_model, actual_routing);
  EXPECT_TRUE(actual.ok()) << actual.status();
  if (!actual.ok()) return c;
  // True (and printed) when the two routed the token at `position` differently.
  auto swapped = [&](size_t p, int32_t position, double err, const std::string& row) {
    const RoutingRecorder::Token* e = expected_routing.Find(p, position);
    const RoutingRecorder::Token* a = actual_routing.Find(p, position);
    if (e == nullptr || a == nullptr) return false;
    bool any = false;
    for (const auto& [layer, choice] : *e) {
      const auto it = a->find(layer);
      if (it == a->end() || it->second.experts == choice.experts) continue;
      any = true;
      EXPECT_LT(choice.margin, kMaxSwapMargin) << what << ": " << row << " routed differently in layer " << layer
                                               << " at a router margin of " << choice.margin;
      std::cout << what << ": " << row << ": routed differently in layer " << layer << " (router margin "
                << choice.margin << "), logits relative error " << err << "\n";
    }
    c.swapped += any;
    return any;
  };
  for (size_t p = 0; p < prompts.size(); ++p) {
    const GreedyResult& e = expected->sequences[p];
    const GreedyResult& a = actual->sequences[p];
    for (size_t i = 0; i < e.prompt_logits.size(); ++i) {
      const double err = RelativeError(e.prompt_logits[i], a.prompt_logits[i]);
      ++c.rows;
      if (swapped(p, static_cast<int32_t>(i), err, absl::StrCat("prompt ", p, " position ", i))) continue;
      c.worst_prompt = std::max(c.worst_prompt, err);
      EXPECT_LE(err, bound) << what << ": prompt " << p << " position " << i;
    }
    EXPECT_EQ(e.step_logits.size(), a.step_logits.size()) << what << ": prompt " << p;
    for (size_t i = 0; i < std::min(e.step_logits.size(), a.step_logits.size()); ++i) {
      const std::vector<float>& row = e.step_logits[i];
      const double err = RelativeError(row, a.step_logits[i]);
      ++c.rows;
      ++c.steps;
      // Step i's logits come from the token at position prompt length + i - 1.
      const int32_t position = static_cast<int32_t>(prompts[p].size() + i) - 1;
      if (swapped(p, position, err, absl::StrCat("prompt ", p, " decode step ", i))) continue;
      c.worst_step = std::max(c.worst_step, err);
      EXPECT_LE(err, bound) << what << ": prompt " << p << " decode step " << i;
      if (a.argmax[i] == e.argmax[i]) continue;
      double max_abs = 0;
      for (float v : row) max_abs = std::max(max_abs, std::fabs(double(v)));
      const double margin = (double(row[e.argmax[i]]) - double(row[a.argmax[i]])) / max_abs;
      EXPECT_LE(margin, bound) << what << ": prompt " << p << " step " << i << " chose "
                               << a.argmax[i] << " over " << e.argmax[i];
      ++c.near_ties;
      std::cout << what << ": prompt " << p << " step " << i << ": near-tie, " << a.argmax[i]
                << " instead of " << e.argmax[i] << " (margin " << margin << " of max |logit|)\n";
    }
  }
  return c;
}

class CudaGoldenModelTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaGoldenModelTest, LogitsAndGreedyTokensMatchCpu) {
  MOE_REQUIRE_GPU();
  const std::string src = testing::DataDir() + "/models/" + GetParam();
  const std::string dir = testing::ScratchDir("bf16");
  CopyAsBf16(src, dir);
  if (HasFatalFailure()) return;
  std::ifstream in(src + "/golden.json");
  const auto prompts = nlohmann::json::parse(in)["prompts"].get<std::vector<std::vector<int32_t>>>();

  auto cpu = MoeModel::Load(dir);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto gpu = cuda::CudaMoeModel::Load(dir, {.max_tokens = 512, .max_seqs = 16});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  // Whole prompts at once with block 16; chunked prefill (steps mixing prefill chunks with
  // decodes) with block 4. Keeping every prompt position's logits asks for 26 rows in the
  // first step, more than max_seqs: the GPU model runs the head in turns of 16 rows.
  const GreedyOptions whole{.max_new_tokens = 20, .block_size = 16, .keep_prompt_logits = true,
                            .keep_step_logits = true};
  GreedyOptions chunked = whole;
  chunked.block_size = 4;
  chunked.prefill_chunk = 5;
  const Comparison a = CompareGreedy(**cpu, **gpu, prompts, whole, "whole prompts");
  const Comparison b = CompareGreedy(**cpu, **gpu, prompts, chunked, "chunked prefill");
  std::cout << GetParam() << ": max relative error vs CPU " << std::max(a.worst_prompt, b.worst_prompt)
            << " (prompt logits), " << std::max(a.worst_step, b.worst_step) << " (decode steps); "
            << a.near_ties + b.near_ties << " near-tie argmax flips in " << a.steps + b.steps
            << " steps (0: identical greedy continuations); " << a.swapped + b.swapped
            << " rows routed differently at near-ties, of " << a.rows + b.rows << " rows\n";

  // Decode steps replayed from CUDA graphs (padded batches) against eager steps: the same
  // kernels, so only cuBLAS's choice for the padded row count may move the last bits.
  auto eager = cuda::CudaMoeModel::Load(dir, {.max_tokens = 512, .max_seqs = 16, .max_graph_batch = 0});
  ASSERT_TRUE(eager.ok()) << eager.status();
  const Comparison g = CompareGreedy(**eager, **gpu, prompts, whole, "graphs vs eager", 1e-3);
  std::cout << GetParam() << ": graphs vs eager " << g.worst_step << " (decode steps), " << g.near_ties
            << " near-tie argmax flips in " << g.steps << " steps\n";
  const auto routed = (*gpu)->RoutedTokensPerExpert();
  int64_t total = 0;
  for (int64_t n : routed) total += n;
  EXPECT_GT(total, 0) << "the GPU model reports no routed tokens";
}

INSTANTIATE_TEST_SUITE_P(Golden, CudaGoldenModelTest,
                         ::testing::Values("qwen3_moe", "qwen3_moe_top4", "mixtral", "olmoe", "qwen2_moe"));

// 4 layers at Qwen3-30B-A3B's real shapes (128 experts top-8, D 2048, I 768, 32/4 heads,
// the full vocabulary): 6.2 GB of bf16 weights written to scratch, then both backends.
TEST(CudaModel, Qwen3_30B_A3B_FourLayersMatchCpu) {
  MOE_REQUIRE_GPU();
  std::ifstream in(testing::DataDir() + "/configs/qwen3-30b-a3b.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["num_hidden_layers"] = 4;
  const std::string dir = testing::ScratchDir("qwen3-30b-a3b-4l");
  auto written = WriteRandomModel(config, {.dtype = DType::kBF16, .seed = 7}, dir);
  ASSERT_TRUE(written.ok()) << written.status();
  auto cpu = MoeModel::Load(dir);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  // 220 prompt tokens route 1760 rows over 128 experts: the prefill step takes the prefill
  // expert path (WMMA, then wgmma), and the decode steps the decode path.
  std::vector<std::vector<int32_t>> prompts = {{}, {}, {}};
  for (int i = 0; i < 200; ++i) prompts[0].push_back((i * 7919 + 13) % 151936);
  for (int i = 0; i < 3; ++i) prompts[1].push_back((i * 104729 + 5) % 151936);
  for (int i = 0; i < 17; ++i) prompts[2].push_back((i * 15485863 + 1) % 151936);
  for (const bool wgmma : {false, true}) {
    const std::string what = wgmma ? "qwen3-30b-a3b 4 layers (wgmma prefill)" : "qwen3-30b-a3b 4 layers";
    auto gpu = cuda::CudaMoeModel::Load(dir, {.max_tokens = 256, .max_seqs = 8, .wgmma_prefill = wgmma});
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    const Comparison c = CompareGreedy(**cpu, **gpu, prompts,
                                       {.max_new_tokens = 8, .block_size = 16, .keep_prompt_logits = true,
                                        .keep_step_logits = true},
                                       what);
    std::cout << what << ": max relative error vs CPU " << c.worst_prompt << " (prompt logits), " << c.worst_step
              << " (decode steps); " << c.near_ties << " near-tie argmax flips in " << c.steps << " steps; "
              << c.swapped << " rows routed differently at near-ties, of " << c.rows << " rows\n";
  }
  fs::remove_all(dir);
}

TEST(CudaModel, DecodeStepsReplayAsOneGraph) {
  MOE_REQUIRE_GPU();
  auto gpu = cuda::CudaMoeModel::Load(testing::DataDir() + "/models/qwen3_moe", {.max_tokens = 64, .max_seqs = 8});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  auto out = RunGreedy(**gpu, {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}}, {.max_new_tokens = 12});
  ASSERT_TRUE(out.ok()) << out.status();
  // Three sequences (padded to 4) stay at one context bucket: the first decode step runs
  // eagerly and is captured, and every later one is a single graph launch.
  const cuda::CudaMoeModel::StepCounts counts = (*gpu)->step_counts();
  ASSERT_EQ(out->timings.decode_steps, 11);
  EXPECT_EQ(counts.graph_captures, 1);
  EXPECT_EQ(counts.graph_replays, out->timings.decode_steps - 1);
  EXPECT_EQ(counts.eager, 2) << "the prefill step and the first decode step";
  // The graph holds the whole step: at least norm, qkv, prologue, KV write, attention,
  // o_proj, norm, router, route, dispatch and experts kernels in every layer.
  EXPECT_GE(counts.last_graph_kernels, 10 * (*gpu)->info().num_layers);
  std::cout << "decode graph: " << counts.last_graph_kernels << " kernels for "
            << (*gpu)->info().num_layers << " layers\n";
}

// The model's own logits, sampled on the host: Model's ForwardAndSample over Forward.
class HostSampled final : public Model {
 public:
  explicit HostSampled(Model& model) : model_(model) {}
  const ModelInfo& info() const override { return model_.info(); }
  absl::StatusOr<Tensor> Forward(const StepBatch& batch, KvCache& kv) override { return model_.Forward(batch, kv); }
  absl::StatusOr<KvCache> CreateKvCache(const KvCacheShape& shape) override { return model_.CreateKvCache(shape); }

 private:
  Model& model_;
};

// Runs `requests` to their end on an engine over `model`; each one's tokens and logprobs.
std::vector<testing::RecordingSink::Choice> Generate(Model& model, const std::vector<Request>& requests) {
  auto engine = Engine::Create(model, {.num_kv_blocks = 64, .block_size = 16});
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  std::vector<std::shared_ptr<testing::RecordingSink>> sinks;
  for (const Request& r : requests) {
    sinks.push_back(std::make_shared<testing::RecordingSink>());
    EXPECT_TRUE((*engine)->Submit(r, sinks.back()).ok());
  }
  EXPECT_TRUE((*engine)->RunUntilIdle().ok());
  std::vector<testing::RecordingSink::Choice> out;
  for (const auto& sink : sinks) out.push_back(sink->choice());
  return out;
}

TEST(CudaModel, SampledDecodeStepsReplayAsOneGraphAndCopyBackOnlyTheSamples) {
  MOE_REQUIRE_GPU();
  auto gpu = cuda::CudaMoeModel::Load(testing::DataDir() + "/models/qwen3_moe", {.max_tokens = 64, .max_seqs = 8});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  // Top-p, top-k, penalties and logprobs, seeded: every part of the device sampler.
  std::vector<Request> requests;
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}};
  for (size_t i = 0; i < prompts.size(); ++i) {
    Request r{.id = "r" + std::to_string(i), .prompt = prompts[i]};
    r.sampling = {.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .repetition_penalty = 1.1f,
                  .presence_penalty = 0.2f, .seed = 7 + i, .logprobs = 2};
    r.stopping = {.max_tokens = 12, .ignore_eos = true};
    requests.push_back(std::move(r));
  }
  HostSampled host(**gpu);
#ifdef MOE_CUDA_EMU
  int64_t before = emu::DeviceToHostBytes();
#endif
  const auto expected = Generate(host, requests);
#ifdef MOE_CUDA_EMU
  const int64_t logits_bytes = emu::DeviceToHostBytes() - before;
  before = emu::DeviceToHostBytes();
#endif
  const cuda::CudaMoeModel::StepCounts start = (*gpu)->step_counts();
  const auto actual = Generate(**gpu, requests);
  const cuda::CudaMoeModel::StepCounts end = (*gpu)->step_counts();
  // The same tokens and logprobs from the same logits, sampled on the host or the device.
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(actual[i].tokens, expected[i].tokens) << requests[i].id;
    ASSERT_EQ(actual[i].logprobs.size(), expected[i].logprobs.size()) << requests[i].id;
    for (size_t t = 0; t < expected[i].logprobs.size(); ++t) {
      EXPECT_NEAR(actual[i].logprobs[t].chosen.logprob, expected[i].logprobs[t].chosen.logprob, 1e-4);
      ASSERT_EQ(actual[i].logprobs[t].top.size(), 2u);
      for (int j = 0; j < 2; ++j) EXPECT_EQ(actual[i].logprobs[t].top[j].token, expected[i].logprobs[t].top[j].token);
    }
  }
  // One prefill step, then 11 decode steps of three sequences: the first eager and
  // captured with the sampler inside, every later one a single graph launch.
  EXPECT_EQ(end.graph_captures - start.graph_captures, 1);
  EXPECT_EQ(end.graph_replays - start.graph_replays, 10);
  EXPECT_EQ(end.eager - start.eager, 2);
#ifdef MOE_CUDA_EMU
  // What came back: a few hundred bytes a row (token, logprob, top logprobs, routed counts),
  // not the rows' logits.
  const int64_t sampled_bytes = emu::DeviceToHostBytes() - before;
  const int64_t steps = 12, rows = 3, vocab = (*gpu)->info().vocab_size;
  std::cout << "device-to-host bytes per step: " << sampled_bytes / steps << " sampled on the device, "
            << logits_bytes / steps << " with the logits (3 rows, vocabulary " << vocab << ")\n";
  EXPECT_GE(logits_bytes, steps * rows * vocab * 4);
  const int64_t routed_bytes = (*gpu)->config().num_experts * 8;
  EXPECT_LE(sampled_bytes, steps * (routed_bytes + rows * (8 + 20 * 8) + 64));
#endif
}

TEST(CudaModel, RejectsAHostKvCacheAndOversizedSteps) {
  MOE_REQUIRE_GPU();
  auto gpu = cuda::CudaMoeModel::Load(testing::DataDir() + "/models/qwen3_moe", {.max_tokens = 4, .max_seqs = 2});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  const KvCacheShape shape{.num_layers = (*gpu)->info().num_layers, .num_blocks = 8, .block_size = 4,
                           .num_kv_heads = (*gpu)->info().num_kv_heads, .head_dim = (*gpu)->info().head_dim};
  auto host_kv = KvCache::Create(shape);
  ASSERT_TRUE(host_kv.ok());
  StepBatch b;
  b.token_ids = {1, 2, 3, 4, 5};
  b.positions = {0, 1, 2, 3, 4};
  b.query_starts = {0, 5};
  b.context_lens = {5};
  b.max_blocks_per_seq = 2;
  b.block_tables = {0, 1};
  b.slot_mapping = {0, 1, 2, 3, 4};
  b.logits_rows = {4};
  EXPECT_EQ((*gpu)->Forward(b, *host_kv).status().code(), absl::StatusCode::kInvalidArgument);
  auto kv = (*gpu)->CreateKvCache(shape);
  ASSERT_TRUE(kv.ok()) << kv.status();
  const absl::Status too_many = (*gpu)->Forward(b, *kv).status();  // 5 tokens > max_tokens 4
  EXPECT_EQ(too_many.code(), absl::StatusCode::kInvalidArgument) << too_many;
  EXPECT_NE(too_many.message().find("5 tokens"), std::string::npos) << too_many;
}

}  // namespace
}  // namespace moe
