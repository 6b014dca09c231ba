// The whole model on the GPU against the CPU model: logits of every prompt position and
// every decode step, and identical greedy continuations, for every golden tiny model and a
// 4-layer model at Qwen3-30B-A3B shapes. Both backends load the same bf16 weights (the
// golden f32 checkpoints are rounded to bf16 first), so what differs is only the GPU's bf16
// activations, and, at the reference's routing near-ties, which experts a token takes
// (RouterMargins). Skipped without a GPU.
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
#include "gtest/gtest.h"
#include "moe/cuda/cuda_moe_model.h"
#include "moe/moe_model.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
#include "tests/sequence_runner.h"
#include "tests/test_util.h"
#include "tools/random_model.h"

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

// Routing near-ties of the reference model, per prompt and position. A token's router
// margin is the smallest, over the MoE layers, gap between the router logit of its k-th
// chosen expert and the best one left out, relative to its largest |router logit|. The GPU
// routes from bf16 activations and the CPU from f32 ones, so where the margin is within
// that rounding the two may choose different experts, and a swapped expert moves the
// token's logits by far more than the logit tolerance: such rows are not kernel errors.
// They are counted, printed and must stay few.
constexpr float kRouterTieMargin = 1e-2f;

class RouterMargins {
 public:
  explicit RouterMargins(size_t prompts, int top_k) : by_prompt_(prompts), top_k_(top_k) {}

  // MoeModel::RouterObserver: one MoE layer's router logits [T, E] of the step in flight.
  void Observe(const Tensor& router_logits) {
    const int64_t T = router_logits.dim(0), E = router_logits.dim(1);
    if (top_k_ >= E) return;  // every expert is chosen: nothing to swap
    if (step_.empty()) step_.assign(T, INFINITY);
    std::vector<float> row(E);
    for (int64_t t = 0; t < T; ++t) {
      const float* logits = router_logits.Row<float>(t);
      std::partial_sort_copy(logits, logits + E, row.begin(), row.end(), std::greater<float>());
      float scale = 0;
      for (int64_t e = 0; e < E; ++e) scale = std::max(scale, std::fabs(logits[e]));
      const float margin = (row[top_k_ - 1] - row[top_k_]) / std::max(scale, 1e-30f);
      step_[t] = std::min(step_[t], margin);
    }
  }

  // GreedyOptions::after_step: files the step's margins under (prompt, position).
  void Record(const StepBatch& batch, const std::vector<int32_t>& prompt_of_seq) {
    for (int32_t s = 0; s < batch.num_seqs(); ++s) {
      for (int32_t t = batch.query_starts[s]; t < batch.query_starts[s + 1]; ++t) {
        by_prompt_[prompt_of_seq[s]][batch.positions[t]] = step_.empty() ? INFINITY : step_[t];
      }
    }
    step_.clear();
  }

  bool NearTie(size_t prompt, int32_t position) const {
    const auto it = by_prompt_[prompt].find(position);
    return it != by_prompt_[prompt].end() && it->second < kRouterTieMargin;
  }

 private:
  std::vector<std::map<int32_t, float>> by_prompt_;  // [prompt] position -> margin
  std::vector<float> step_;                          // [T] of the step in flight
  int top_k_;
};

struct Comparison {
  double worst_prompt = 0, worst_step = 0;
  int rows = 0, steps = 0;  // logits rows compared; of those, decode steps
  int near_ties = 0;        // argmax flips at near-ties of the logits
  int routing_ties = 0;     // rows at routing near-ties of the reference (not held to the bound)
};

// Runs `expected` greedily, then `actual` on the same tokens (teacher forcing), and compares
// every kept logit row and every step's argmax. Greedy continuations are identical exactly
// when every argmax agrees. An argmax may differ only at a near-tie: where `expected` puts
// the other model's choice within the logit tolerance (bound * max |logit|) of its own,
// which the random tiny models do at a few steps (their top-2 margins go down to 0.2% of
// max |logit|). Near-ties are counted and printed. When `expected` is the CPU MoeModel,
// rows at its routing near-ties (RouterMargins) are reported rather than held to the bound.
Comparison CompareGreedy(Model& expected_model, Model& actual_model,
                         const std::vector<std::vector<int32_t>>& prompts, GreedyOptions options,
                         const std::string& what, double bound = kMaxRelativeError) {
  Comparison c;
  auto* reference = dynamic_cast<MoeModel*>(&expected_model);
  RouterMargins margins(prompts.size(), reference != nullptr ? reference->config().top_k : 0);
  if (reference != nullptr) {
    reference->set_router_observer([&margins](int, const Tensor& logits) { margins.Observe(logits); });
    options.after_step = [&margins](const StepBatch& b, const std::vector<int32_t>& prompt_of_seq) {
      margins.Record(b, prompt_of_seq);
    };
  }
  auto expected = RunGreedy(expected_model, prompts, options);
  if (reference != nullptr) reference->set_router_observer(nullptr);
  options.after_step = nullptr;
  EXPECT_TRUE(expected.ok()) << expected.status();
  if (!expected.ok()) return c;
  std::vector<std::vector<int32_t>> forced;
  for (const GreedyResult& r : expected->sequences) forced.push_back(r.tokens);
  options.forced_tokens = &forced;
  auto actual = RunGreedy(actual_model, prompts, options);
  EXPECT_TRUE(actual.ok()) << actual.status();
  if (!actual.ok()) return c;
  // True (and reported) when the row at `position` is a routing near-tie off the bound.
  auto excused = [&](size_t p, int32_t position, double err, const char* kind, size_t i) {
    if (err <= bound || !margins.NearTie(p, position)) return false;
    ++c.routing_ties;
    std::cout << what << ": prompt " << p << " " << kind << " " << i << ": routing near-tie at position "
              << position << ", relative error " << err << "\n";
    return true;
  };
  for (size_t p = 0; p < prompts.size(); ++p) {
    const GreedyResult& e = expected->sequences[p];
    const GreedyResult& a = actual->sequences[p];
    for (size_t i = 0; i < e.prompt_logits.size(); ++i) {
      const double err = RelativeError(e.prompt_logits[i], a.prompt_logits[i]);
      ++c.rows;
      if (excused(p, static_cast<int32_t>(i), err, "position", i)) continue;
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
      if (excused(p, static_cast<int32_t>(prompts[p].size() + i) - 1, err, "decode step", i)) continue;
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
  // A margin loose enough to excuse many rows would hide real errors.
  EXPECT_LE(c.routing_ties * 10, c.rows) << what << ": " << c.routing_ties << " of " << c.rows
                                         << " rows are routing near-ties";
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
  // decodes) with block 4.
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
            << " steps (0: identical greedy continuations); " << a.routing_ties + b.routing_ties
            << " routing near-ties in " << a.rows + b.rows << " rows\n";

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
              << c.routing_ties << " routing near-ties in " << c.rows << " rows\n";
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
