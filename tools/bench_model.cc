// bench-model: the whole model on the GPU with random weights at a real config's shapes
// (no checkpoint, so the full 48-layer Qwen3-30B-A3B fits where its files would not).
//
// Decode: B sequences whose caches already hold --context tokens take one token each per
// step; prints ms per step, tokens/s, and the step's roofline: bytes it must read (attention
// and router weights, the experts expected to be touched under even routing, the LM head,
// the KV cache) over the copy bandwidth measured in the same run. Each decode batch runs
// once per --sampling mode: `logits` (Forward, the logits copied to the host), `greedy` and
// `top_p` (ForwardAndSample on the device at T 0.8, top-p 0.95, seeded; only the samples
// come back). Prefill: one prompt of P tokens in one step, logits copied back; prints tokens/s.
//
//   bench-model [--config tests/data/configs/qwen3-30b-a3b.json] [--batches 1,8,32,128]
//               [--sampling logits,greedy,top_p]
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "moe/config.h"
#include "moe/cuda/cuda_moe_model.h"
#include "runtime/cuda/bench_util.h"
#include "runtime/cuda/device.h"
#include "runtime/status_macros.h"

ABSL_FLAG(std::string, config, "tests/data/configs/qwen3-30b-a3b.json", "config.json of the model");
ABSL_FLAG(int, layers, 0, "layers to build (0 = the config's)");
ABSL_FLAG(std::vector<std::string>, batches, (std::vector<std::string>{"1", "8", "32", "128"}), "decode batches");
ABSL_FLAG(std::vector<std::string>, prefill, (std::vector<std::string>{"2048", "8192"}), "prefill lengths");
ABSL_FLAG(int, context, 1024, "tokens already cached per decoding sequence");
ABSL_FLAG(int, steps, 20, "timed decode steps per batch");
ABSL_FLAG(std::vector<std::string>, sampling, (std::vector<std::string>{"logits"}),
          "decode modes: logits (copied back), greedy, top_p (sampled on the device)");
ABSL_FLAG(bool, wgmma_prefill, false, "prefill experts on the wgmma path (CudaModelOptions::wgmma_prefill)");

namespace moe::cuda {
namespace {

constexpr int kBlockSize = 16;

absl::StatusOr<std::vector<int>> Ints(const std::vector<std::string>& values, const char* flag) {
  std::vector<int> out;
  for (const std::string& v : values) {
    int n = 0;
    if (!absl::SimpleAtoi(v, &n) || n < 1) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": bad \"", v, "\""));
    out.push_back(n);
  }
  return out;
}

// B sequences, each with `len` tokens in this step ending at position context + len - 1,
// blocks laid out one sequence after another.
StepBatch MakeBatch(int seqs, int len, int context, int vocab) {
  StepBatch b;
  const int total = context + len;
  b.max_blocks_per_seq = (total + kBlockSize - 1) / kBlockSize;
  b.query_starts.push_back(0);
  for (int s = 0; s < seqs; ++s) {
    for (int j = 0; j < b.max_blocks_per_seq; ++j) b.block_tables.push_back(s * b.max_blocks_per_seq + j);
    for (int p = context; p < total; ++p) {
      b.token_ids.push_back((s * 7919 + p * 104729) % vocab);
      b.positions.push_back(p);
      b.slot_mapping.push_back(int64_t{s} * b.max_blocks_per_seq * kBlockSize + p);
    }
    b.query_starts.push_back(b.num_tokens());
    b.context_lens.push_back(total);
    b.logits_rows.push_back(b.num_tokens() - 1);
  }
  return b;
}

// Bytes a decode step of B sequences at `context` must read at least.
double DecodeBytes(const MoeConfig& c, int batch, int context) {
  const double D = c.hidden_size, hd = c.head_dim, H = c.num_heads, KVH = c.num_kv_heads;
  const double attention = ((H + 2 * KVH) * hd * D + D * H * hd) * 2;
  const double expert = 3.0 * c.expert_intermediate_size * D * 2;
  const double touched = c.num_experts * (1 - std::pow(1 - double(c.top_k) / c.num_experts, batch));
  const double router = c.num_experts * D * 2;
  const double kv = double(batch) * (context + 1) * 2 * KVH * hd * 2;
  return c.num_layers * (attention + router + touched * expert + kv) + double(c.vocab_size) * D * 2;
}

absl::Status Run() {
  if (!HasDevice()) return absl::FailedPreconditionError(NoDeviceReason());
  ASSIGN_OR_RETURN(const std::vector<int> batches, Ints(absl::GetFlag(FLAGS_batches), "batches"));
  ASSIGN_OR_RETURN(const std::vector<int> prefills, Ints(absl::GetFlag(FLAGS_prefill), "prefill"));
  const std::string path = absl::GetFlag(FLAGS_config);
  ASSIGN_OR_RETURN(MoeConfig config, LoadConfigFile(path));
  if (absl::GetFlag(FLAGS_layers) > 0) config.num_layers = absl::GetFlag(FLAGS_layers);
  const int context = absl::GetFlag(FLAGS_context);
  int max_batch = 1, max_prefill = 1;
  for (int b : batches) max_batch = std::max(max_batch, b);
  for (int p : prefills) max_prefill = std::max(max_prefill, p);

  ASSIGN_OR_RETURN(const Ceilings ceilings, MeasureCeilings(nullptr));
  const absl::Time load = absl::Now();
  ASSIGN_OR_RETURN(DeviceWeights weights, RandomDeviceWeights(config, 1));
  const double weight_gb = weights.bytes / 1e9;
  ASSIGN_OR_RETURN(auto model, CudaMoeModel::Create(config, std::move(weights),
                                                    {.max_tokens = std::max(max_prefill, max_batch),
                                                     .max_seqs = max_batch,
                                                     .wgmma_prefill = absl::GetFlag(FLAGS_wgmma_prefill)}));
  // Decode batches lay out max_batch sequences of context + 1 tokens; prefill one sequence
  // of max_prefill. The cache holds the larger of the two, not their product (at the
  // defaults that product, 128 x 8192 tokens, would be 103 GB of KV).
  auto blocks_for = [](int64_t tokens) { return (tokens + kBlockSize - 1) / kBlockSize; };
  const int64_t num_blocks = std::max(max_batch * blocks_for(context + 1), blocks_for(max_prefill));
  ASSIGN_OR_RETURN(KvCache kv, model->CreateKvCache({.num_layers = config.num_layers,
                                                     .num_blocks = static_cast<int32_t>(num_blocks),
                                                     .block_size = kBlockSize,
                                                     .num_kv_heads = config.num_kv_heads,
                                                     .head_dim = config.head_dim}));
  std::cout << DeviceDescription() << "\n"
            << absl::StrFormat("%s, %d layers: %.1f GB of bf16 weights made in %s\n", path, config.num_layers,
                               weight_gb, absl::FormatDuration(absl::Now() - load))
            << absl::StrFormat("copy bandwidth measured now: %.0f GB/s\n\n", ceilings.copy_gb_per_s)
            << absl::StrFormat("decode, %d tokens cached per sequence\n%6s %8s %10s %12s %12s %10s %14s\n", context,
                               "batch", "sampling", "ms/step", "tokens/s", "roofline ms", "%roofline", "graph replays");
  for (int batch : batches) {
    const StepBatch b = MakeBatch(batch, 1, context, config.vocab_size);
    for (const std::string& mode : absl::GetFlag(FLAGS_sampling)) {
      if (mode != "logits" && mode != "greedy" && mode != "top_p") {
        return absl::InvalidArgumentError(absl::StrCat("--sampling takes logits, greedy or top_p, not '", mode, "'"));
      }
      SamplingBatch sampling;
      for (int s = 0; s < batch; ++s) {
        sampling.rows.push_back(mode == "greedy" ? RowSampling{}
                                                 : RowSampling{.greedy = false,
                                                               .inv_temperature = 1 / 0.8f,
                                                               .top_p_fraction = static_cast<uint32_t>(
                                                                   0.95 * RowSampling::kFullFraction),
                                                               .seed = static_cast<uint64_t>(s)});
      }
      auto step = [&]() -> absl::Status {
        if (mode == "logits") return model->Forward(b, kv).status();
        return model->ForwardAndSample(b, kv, sampling).status();
      };
      for (int i = 0; i < 2; ++i) RETURN_IF_ERROR(step());
      const int steps = absl::GetFlag(FLAGS_steps);
      const int64_t replays_before = model->step_counts().graph_replays;
      const absl::Time start = absl::Now();
      for (int i = 0; i < steps; ++i) RETURN_IF_ERROR(step());
      const double ms = absl::ToDoubleMilliseconds(absl::Now() - start) / steps;
      const double roofline_ms = DecodeBytes(config, batch, context) / (ceilings.copy_gb_per_s * 1e6);
      const int64_t replays = model->step_counts().graph_replays - replays_before;
      std::cout << absl::StrFormat("%6d %8s %10.2f %12.0f %12.2f %9.1f%% %8d of %-3d\n", batch, mode, ms,
                                   batch * 1e3 / ms, roofline_ms, 100.0 * roofline_ms / ms, replays, steps);
    }
  }
  std::cout << absl::StrFormat("decode graph: %d kernels in the graph captured last\n",
                               model->step_counts().last_graph_kernels);
  std::cout << absl::StrFormat("\nprefill, one sequence\n%8s %10s %12s\n", "tokens", "ms", "tokens/s");
  for (int len : prefills) {
    const StepBatch b = MakeBatch(1, len, 0, config.vocab_size);
    RETURN_IF_ERROR(model->Forward(b, kv).status());  // warm-up
    const absl::Time start = absl::Now();
    for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(model->Forward(b, kv).status());
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - start) / 3;
    std::cout << absl::StrFormat("%8d %10.1f %12.0f\n", len, ms, len * 1e3 / ms);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe::cuda

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "Times the CUDA model steps on a GPU: bench-model --model DIR");
  const absl::Status status = moe::cuda::Run();
  if (!status.ok()) {
    std::cerr << "bench-model: " << status << "\n";
    return 1;
  }
  return 0;
}
