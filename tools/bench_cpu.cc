// bench-cpu: the CPU backend against this machine's memory bandwidth. It measures the read
// bandwidth (all threads summing a buffer far larger than the caches), then decode tok/s at
// each --decode_batch and prefill tok/s over --prefill_tokens, through the engine on the
// calling thread, and prints each decode figure as a share of its roofline: the bandwidth
// over the weight bytes one decode step must read (attention, router, the top-k experts of
// each layer, the LM head). A measuring program, not a test.
//
// Given llama.cpp's llama-bench and a GGUF of the same model, it runs llama-bench too, after
// its own figures, with the same threads, and prints both side by side.
//
//   bench-cpu --model /tmp/qwen3-4l [--decode_batch 1,8] [--prefill_tokens 512] [--steps 16]
//             [--llama_bench /tmp/llama-peer/build/bin/llama-bench --gguf /tmp/llama-peer/q4-bf16.gguf]
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "moe/backend.h"
#include "runtime/command_line.h"
#include "runtime/engine/engine.h"
#include "runtime/status_macros.h"

ABSL_FLAG(std::string, model, "", "model directory (e.g. from moe-make-model)");
ABSL_FLAG(std::vector<std::string>, decode_batch, (std::vector<std::string>{"1", "8"}),
          "sequences decoding together, one figure each");
ABSL_FLAG(std::string, cpu_gemm_inputs, "bf16",
          "CPU backend: what bf16 weights multiply, bf16 (activations rounded, as PyTorch and llama.cpp run bf16 models) or f32 (the reference)");
ABSL_FLAG(int, prefill_tokens, 512, "prompt tokens of the prefill figure");
ABSL_FLAG(int, steps, 16, "decode steps timed per batch size (after two warm-up steps)");
ABSL_FLAG(int, bandwidth_mib, 2048, "buffer the bandwidth is measured on");
ABSL_FLAG(std::string, llama_bench, "", "llama.cpp's llama-bench (tools/llama_cpp_peer/setup.sh builds it): run as the peer, same threads");
ABSL_FLAG(std::string, gguf, "", "the same model as a GGUF, for --llama_bench");

namespace moe {
namespace {

// Best of five: GB/s that all threads read, summing floats.
double ReadBandwidth(size_t bytes) {
  std::vector<float> buffer(bytes / sizeof(float));
#pragma omp parallel for
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<float>(i & 7);
  double best = 0;
  volatile float sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const absl::Time start = absl::Now();
    float sum = 0;
#pragma omp parallel for simd reduction(+ : sum)
    for (size_t i = 0; i < buffer.size(); ++i) sum += buffer[i];
    sink = sink + sum;
    best = std::max(best, bytes / absl::ToDoubleSeconds(absl::Now() - start) / 1e9);
  }
  return best;
}

// Weight bytes one decode step reads (bf16), whatever the batch: every layer's attention and
// router, top_k routed experts (more with a batch, ignored here: the batch-1 roofline),
// shared or dense MLPs, and the LM head.
double DecodeWeightBytes(const MoeConfig& c) {
  const double D = c.hidden_size, q = double(c.num_heads) * c.head_dim, kv = double(c.num_kv_heads) * c.head_dim;
  double params = double(c.vocab_size) * D;  // the LM head
  for (int layer = 0; layer < c.num_layers; ++layer) {
    params += D * (q + 2 * kv) + q * D;  // q, k, v, o
    if (c.IsMoeLayer(layer)) {
      params += double(c.num_experts) * D + double(c.top_k) * 3 * D * c.expert_intermediate_size;
      params += 3 * D * c.shared_expert_intermediate_size;
    } else {
      params += 3 * D * c.dense_intermediate_size;
    }
  }
  return 2 * params;
}

class Discard final : public OutputSink {
 public:
  void OnDelta(const OutputDelta&) override {}
  void OnFinal(const FinalOutput&) override {}
};

std::vector<int32_t> Prompt(int length, int vocab, int seed) {
  std::vector<int32_t> p(length);
  for (int i = 0; i < length; ++i) p[i] = (seed * 7919 + i * 104729) % (vocab - 3) + 3;
  return p;
}

// Decode tok/s with `batch` sequences: prefill them, warm up, then time `steps` steps.
absl::StatusOr<double> Decode(Model& model, int batch, int steps) {
  ASSIGN_OR_RETURN(auto engine, Engine::Create(model, {.num_kv_blocks = batch * 8 + 8,
                                                       .enable_prefix_caching = false,
                                                       .scheduler = {.max_num_batched_tokens = 4096}}));
  for (int s = 0; s < batch; ++s) {
    Request r{.id = std::to_string(s), .prompt = Prompt(16, model.info().vocab_size, s)};
    r.sampling.temperature = 0;
    r.stopping = {.max_tokens = steps + 4, .ignore_eos = true};
    RETURN_IF_ERROR(engine->Submit(r, std::make_shared<Discard>()));
  }
  for (int warm = 0; warm < 3; ++warm) RETURN_IF_ERROR(engine->Step().status());  // prefill + 2
  const absl::Time start = absl::Now();
  for (int s = 0; s < steps; ++s) RETURN_IF_ERROR(engine->Step().status());
  return batch * steps / absl::ToDoubleSeconds(absl::Now() - start);
}

// Prefill tok/s of one `tokens`-long prompt in one step (after one warm-up prompt).
absl::StatusOr<double> Prefill(Model& model, int tokens) {
  ASSIGN_OR_RETURN(auto engine, Engine::Create(model, {.num_kv_blocks = 2 * (tokens / 16 + 2),
                                                       .enable_prefix_caching = false,
                                                       .scheduler = {.max_num_batched_tokens = tokens}}));
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    Request r{.id = std::to_string(rep), .prompt = Prompt(tokens, model.info().vocab_size, 100 + rep)};
    r.sampling.temperature = 0;
    r.stopping = {.max_tokens = 1, .ignore_eos = true};
    RETURN_IF_ERROR(engine->Submit(r, std::make_shared<Discard>()));
    const absl::Time start = absl::Now();
    RETURN_IF_ERROR(engine->Step().status());
    if (rep > 0) best = std::max(best, tokens / absl::ToDoubleSeconds(absl::Now() - start));
    RETURN_IF_ERROR(engine->RunUntilIdle());
  }
  return best;
}

struct PeerFigures {
  double decode = 0;   // tg tok/s, batch 1
  double prefill = 0;  // pp tok/s
};

// llama-bench's tg and pp figures on the GGUF, as JSON.
absl::StatusOr<PeerFigures> RunLlamaBench(int tokens, int steps) {
  const std::string command =
      absl::StrCat(absl::GetFlag(FLAGS_llama_bench), " -m '", absl::GetFlag(FLAGS_gguf), "' -t ", omp_get_max_threads(),
                   " -p ", tokens, " -n ", steps, " -r 3 -o json 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError(absl::StrCat("cannot run ", command));
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), pipe)) > 0;) out.append(buf, n);
  if (const int rc = pclose(pipe); rc != 0) return absl::InternalError(absl::StrCat(command, " exited with ", rc));
  const nlohmann::json runs = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (!runs.is_array()) return absl::InternalError(absl::StrCat("llama-bench printed no JSON array: ", out.substr(0, 200)));
  PeerFigures f;
  for (const nlohmann::json& r : runs) {
    if (r.value("n_gen", 0) > 0) f.decode = r.value("avg_ts", 0.0);
    if (r.value("n_prompt", 0) > 0) f.prefill = r.value("avg_ts", 0.0);
  }
  return f;
}

absl::Status Run() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  const double bandwidth = ReadBandwidth(static_cast<size_t>(absl::GetFlag(FLAGS_bandwidth_mib)) << 20);
  ASSIGN_OR_RETURN(const cpu::GemmInputs gemm_inputs, ParseGemmInputs(absl::GetFlag(FLAGS_cpu_gemm_inputs)));
  const bool peer = !absl::GetFlag(FLAGS_llama_bench).empty();
  if (peer && absl::GetFlag(FLAGS_gguf).empty()) return absl::InvalidArgumentError("--llama_bench needs --gguf");
  const int tokens = absl::GetFlag(FLAGS_prefill_tokens), steps = absl::GetFlag(FLAGS_steps);
  double decode1 = 0, prefill = 0;
  {
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(dir, {.backend = "cpu", .max_tokens = 4096, .max_seqs = 256,
                                                       .gemm_inputs = gemm_inputs}));
  const double bytes = DecodeWeightBytes(loaded.config);
  std::printf("bench-cpu: %s, %d threads\n", dir.c_str(), omp_get_max_threads());
  std::printf("  read bandwidth            %8.1f GB/s\n", bandwidth);
  std::printf("  weights read per decode step %5.2f GB: roofline %.1f tok/s at batch 1\n", bytes / 1e9,
              bandwidth * 1e9 / bytes);
  for (const std::string& b : absl::GetFlag(FLAGS_decode_batch)) {
    int batch;
    if (!absl::SimpleAtoi(b, &batch) || batch < 1) return absl::InvalidArgumentError("--decode_batch takes positive integers");
    ASSIGN_OR_RETURN(const double tps, Decode(*loaded.model, batch, steps));
    if (batch == 1) decode1 = tps;
    std::printf("  decode, batch %-3d        %8.1f tok/s (%.0f%% of the bandwidth, %.1f steps/s)\n", batch, tps,
                100 * (tps / batch) * bytes / (bandwidth * 1e9), tps / batch);
  }
  ASSIGN_OR_RETURN(prefill, Prefill(*loaded.model, tokens));
  std::printf("  prefill, %d tokens       %8.1f tok/s\n", tokens, prefill);
  }  // our model is unloaded before the peer runs
  if (!peer) return absl::OkStatus();
  ASSIGN_OR_RETURN(const PeerFigures llama, RunLlamaBench(tokens, steps));
  std::printf("llama.cpp: llama-bench on %s, %d threads\n", absl::GetFlag(FLAGS_gguf).c_str(), omp_get_max_threads());
  std::printf("  decode, batch 1 (tg%d)    %8.1f tok/s: ours %.2fx\n", steps, llama.decode,
              llama.decode > 0 ? decode1 / llama.decode : 0.0);
  std::printf("  prefill (pp%d)           %8.1f tok/s: ours %.2fx\n", tokens, llama.prefill,
              llama.prefill > 0 ? prefill / llama.prefill : 0.0);
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "The CPU backend against the memory bandwidth: bench-cpu --model DIR");
  if (const absl::Status s = moe::Run(); !s.ok()) {
    std::fprintf(stderr, "bench-cpu: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
