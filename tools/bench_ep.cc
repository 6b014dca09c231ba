// bench-ep: what expert parallelism costs. Run it under mpirun; each rank loads its share of
// the experts (CPU ranks over MPI, or one GPU per rank over NCCL with --backend cuda) and
// runs decode-shaped steps of B sequences (one new token each) through the whole model,
// every rank at once.
//
//   moe-make-model --config tests/data/configs/qwen3-30b-a3b.json --layers 4 --out /tmp/q4
//   mpirun -np 4 bench-ep --model /tmp/q4 --batch 1,64,256 --steps 5 [--backend cuda]
//
// Per batch size it prints, for one rank and one MoE layer: the routed rows and bytes it
// sent to other ranks (computed from the routing the steps made; each way, rows of D: f32
// on the CPU, bf16 out and f32 back on the GPU),
// the time in the exchange (the collectives, waits for slower ranks included), and the time
// of the whole step, the slowest rank's. -np 1 gives the same step with no exchange.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "moe/backend.h"
#include "moe/moe_model.h"
#include "runtime/dist/communicator.h"
#include "runtime/status_macros.h"

ABSL_FLAG(std::string, model, "", "model directory (a random-weight one from moe-make-model)");
ABSL_FLAG(std::string, batch, "1,64,256", "sequences per rank in a step, comma-separated");
ABSL_FLAG(int, steps, 5, "timed steps per batch size (after one warm-up step)");
ABSL_FLAG(std::string, backend, "cpu", "cpu (ranks over MPI) or cuda (a GPU per rank, NCCL)");
ABSL_FLAG(std::string, cpu_gemm_inputs, "bf16",
          "CPU backend: what bf16 weights multiply, bf16 (activations rounded, as PyTorch and llama.cpp run bf16 models) or f32 (the reference)");

namespace moe {
namespace {

// VmHWM of this process (Linux), 0 where it cannot be read.
int64_t PeakResidentBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmHWM:")) {
      int64_t kb = 0;
      absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::StripSuffix(line.substr(6), "kB")), &kb);
      return kb * 1024;
    }
  }
  return 0;
}

// B sequences of one token each, each in its own KV block.
StepBatch DecodeShapedBatch(int B, int vocab, int block_size, int rank) {
  StepBatch b;
  b.max_blocks_per_seq = 1;
  b.query_starts.push_back(0);
  for (int s = 0; s < B; ++s) {
    b.token_ids.push_back((7919 * (s + 1) + 104729 * rank) % vocab);  // tokens differ by rank
    b.positions.push_back(0);
    b.slot_mapping.push_back(int64_t{s} * block_size);
    b.query_starts.push_back(s + 1);
    b.context_lens.push_back(1);
    b.block_tables.push_back(s);
    b.logits_rows.push_back(s);
  }
  return b;
}

absl::Status Run(dist::Communicator& comm) {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  std::vector<int> batches;
  for (absl::string_view piece : absl::StrSplit(absl::GetFlag(FLAGS_batch), ',', absl::SkipEmpty())) {
    int b;
    if (!absl::SimpleAtoi(piece, &b) || b < 1) return absl::InvalidArgumentError("--batch: positive integers");
    batches.push_back(b);
  }
  const int steps = absl::GetFlag(FLAGS_steps);
  if (steps < 1) return absl::InvalidArgumentError("--steps must be >= 1");
  const absl::Time load_start = absl::Now();
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  ASSIGN_OR_RETURN(const cpu::GemmInputs gemm_inputs, ParseGemmInputs(absl::GetFlag(FLAGS_cpu_gemm_inputs)));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(dir, {.backend = absl::GetFlag(FLAGS_backend), .comm = &comm,
                                                       .max_tokens = max_batch, .max_seqs = max_batch,
                                                       .gemm_inputs = gemm_inputs}));
  Model* model = loaded.model.get();
  RETURN_IF_ERROR(comm.Barrier(absl::Minutes(30)));
  const MoeConfig& c = loaded.config;
  const bool gpu = loaded.backend == "cuda";
  int moe_layers = 0;
  for (int l = 0; l < c.num_layers; ++l) moe_layers += c.IsMoeLayer(l);
  const int R = comm.Size();
  if (comm.Rank() == 0) {
    std::printf("bench-ep: %s, %d layers (%d MoE), D %d, %d experts top-%d over %d %s ranks (%d each%s), "
                "loaded in %.1f s\n",
                c.architecture_name.c_str(), c.num_layers, moe_layers, c.hidden_size, c.num_experts, c.top_k,
                R, loaded.backend.c_str(), c.num_experts / R,
                c.num_experts % R ? absl::StrCat(", the first ", c.num_experts % R, " one more").c_str() : "",
                absl::ToDoubleSeconds(absl::Now() - load_start));
    std::printf("%4s %9s %14s %16s %14s %12s %10s\n", "EP", "batch/rank", "rows sent/layer",
                "MB sent/layer", "exchange ms", "step ms", "exchange %");
  }
  constexpr int kBlockSize = 16;
  for (const int B : batches) {
    ASSIGN_OR_RETURN(KvCache kv, model->CreateKvCache({.num_layers = c.num_layers, .num_blocks = B,
                                                       .block_size = kBlockSize,
                                                       .num_kv_heads = c.num_kv_heads,
                                                       .head_dim = c.head_dim}));
    const StepBatch batch = DecodeShapedBatch(B, c.vocab_size, kBlockSize, comm.Rank());
    RETURN_IF_ERROR(model->Forward(batch, kv).status());  // warm-up
    const ExpertTraffic before = model->expert_traffic();
    double step_seconds = 0;
    for (int s = 0; s < steps; ++s) {
      RETURN_IF_ERROR(comm.Barrier(absl::Minutes(1)));
      const absl::Time t0 = absl::Now();
      RETURN_IF_ERROR(model->Forward(batch, kv).status());
      step_seconds += absl::ToDoubleSeconds(absl::Now() - t0);
    }
    const ExpertTraffic after = model->expert_traffic();
    const int64_t per_layer_step = int64_t{steps} * std::max(moe_layers, 1);
    // [rows sent, exchange ns, step ns]: mean rows over ranks, the slowest rank's times.
    std::vector<int64_t> sum = {after.rows_sent - before.rows_sent};
    std::vector<int64_t> most = {static_cast<int64_t>((after.exchange_seconds - before.exchange_seconds) * 1e9),
                                 static_cast<int64_t>(step_seconds * 1e9)};
    RETURN_IF_ERROR(comm.AllReduce(absl::MakeSpan(sum), dist::ReduceOp::kSum));
    RETURN_IF_ERROR(comm.AllReduce(absl::MakeSpan(most), dist::ReduceOp::kMax));
    if (comm.Rank() != 0) continue;
    const double rows = double(sum[0]) / R / per_layer_step;
    const double mb = rows * c.hidden_size * (gpu ? sizeof(uint16_t) : sizeof(float)) / 1e6;
    const double exchange_ms = most[0] * 1e-6 / per_layer_step;
    const double step_ms = most[1] * 1e-6 / steps;
    std::printf("%4d %9d %14.1f %16.3f %14.3f %12.2f %9.1f%%\n", R, B, rows, mb, exchange_ms, step_ms,
                step_ms > 0 ? 100.0 * exchange_ms * moe_layers / step_ms : 0.0);
  }
  // Peak resident memory per rank against what it should hold: its experts plus the rest.
  std::vector<int64_t> peaks;
  RETURN_IF_ERROR(dist::AllGather<int64_t>(comm, std::vector<int64_t>{PeakResidentBytes()}, peaks));
  if (comm.Rank() == 0) {
    const auto* cpu = dynamic_cast<const MoeModel*>(model);
    const size_t element = cpu != nullptr ? DTypeSize(cpu->expert_dtype()) : sizeof(uint16_t);  // bf16 on GPUs
    const double expert_gb = double(c.num_experts) * 3 * c.expert_intermediate_size * c.hidden_size *
                             moe_layers * element / 1e9;
    std::printf("routed expert weights: %.2f GB in all, %.2f GB per rank; peak resident GB per rank:",
                expert_gb, expert_gb / R);
    for (int64_t p : peaks) std::printf(" %.2f", p / 1e9);
    std::printf("\n");
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "Measures the expert-parallel exchange and step: mpirun -np R bench-ep --model DIR");
  auto comm = moe::dist::MakeCommunicator({.timeout = absl::Minutes(5)});
  if (!comm.ok()) {
    std::cerr << "bench-ep: " << comm.status().message() << "\n";
    return 1;
  }
  const absl::Status status = moe::Run(**comm);
  if (!status.ok()) {
    std::cerr << "bench-ep (rank " << (*comm)->Rank() << "): " << status.message() << "\n";
    if ((*comm)->Size() > 1) (*comm)->Abort(std::string(status.message()));
    return 1;
  }
  return 0;
}
