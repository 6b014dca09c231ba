// moe-generate: loads a model directory and continues prompts given as token ids through
// the engine (continuous batching), greedily by default. The seed of the offline batch
// generator.
//
//   moe-generate --model /models/qwen3 --prompts "1 2 3; 7 8" --max_new_tokens 16
//   moe-generate --model /models/qwen3 --prompts_file prompts.txt   # one prompt per line
//   mpirun -np 4 moe-generate --model /models/qwen3 ...   # experts over 4 ranks; rank 0 prints
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "moe/backend.h"
#include "runtime/engine/engine.h"
#include "runtime/status_macros.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json + safetensors)");
ABSL_FLAG(std::string, backend, "auto", "auto (the GPU when there is one), cpu or cuda");
ABSL_FLAG(std::string, cpu_gemm_inputs, "bf16",
          "CPU backend: what bf16 weights multiply, bf16 (activations rounded, as PyTorch and llama.cpp run bf16 models) or f32 (the reference)");
ABSL_FLAG(std::string, prompts, "",
          "prompts as token ids separated by spaces or commas, prompts separated by ';'");
ABSL_FLAG(std::string, prompts_file, "", "file with one prompt of token ids per line");
ABSL_FLAG(int, max_new_tokens, 16, "tokens to generate per prompt");
ABSL_FLAG(int, block_size, 16, "KV cache block size (a power of two)");
ABSL_FLAG(int, kv_blocks, 0, "KV cache blocks (0: enough for every prompt at once)");
ABSL_FLAG(int, max_batched_tokens, 2048, "token budget of one step (chunked prefill beyond it)");
ABSL_FLAG(int, max_seqs, 256, "sequences running at once");
ABSL_FLAG(float, temperature, 0.0f, "sampling temperature (0: greedy)");
ABSL_FLAG(float, top_p, 1.0f, "nucleus sampling mass");
ABSL_FLAG(int, top_k, 0, "sample among the k most likely tokens (0: all)");
ABSL_FLAG(uint64_t, seed, 0, "seed of prompt i is seed + i");
ABSL_FLAG(bool, stop_at_eos, false, "stop a sequence at the model's EOS ids");

namespace {

absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view text, const std::string& where) {
  std::vector<int32_t> ids;
  for (absl::string_view piece : absl::StrSplit(text, absl::ByAnyChar(" ,\t"), absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(piece, &id)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": \"", piece, "\" is not a token id"));
    }
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": empty prompt"));
  return ids;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadPrompts() {
  std::vector<std::vector<int32_t>> prompts;
  int n = 0;
  for (absl::string_view p : absl::StrSplit(absl::GetFlag(FLAGS_prompts), ';', absl::SkipWhitespace())) {
    ASSIGN_OR_RETURN(auto ids, ParseIds(p, absl::StrCat("--prompts #", ++n)));
    prompts.push_back(std::move(ids));
  }
  if (const std::string path = absl::GetFlag(FLAGS_prompts_file); !path.empty()) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
    std::string line;
    for (int line_no = 1; std::getline(in, line); ++line_no) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      ASSIGN_OR_RETURN(auto ids, ParseIds(line, absl::StrCat(path, ":", line_no)));
      prompts.push_back(std::move(ids));
    }
  }
  if (prompts.empty()) return absl::InvalidArgumentError("no prompts: pass --prompts or --prompts_file");
  return prompts;
}

// Collects one prompt's output.
class Collector final : public moe::OutputSink {
 public:
  void OnDelta(const moe::OutputDelta& d) override {
    tokens.insert(tokens.end(), d.token_ids.begin(), d.token_ids.end());
  }
  void OnFinal(const moe::FinalOutput& f) override { final = f; }
  std::vector<int32_t> tokens;
  moe::FinalOutput final;
};

absl::Status Run(moe::dist::Communicator& comm) {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  ASSIGN_OR_RETURN(auto prompts, ReadPrompts());
  ASSIGN_OR_RETURN(const moe::cpu::GemmInputs gemm_inputs, moe::ParseGemmInputs(absl::GetFlag(FLAGS_cpu_gemm_inputs)));
  const absl::Time load_start = absl::Now();
  ASSIGN_OR_RETURN(moe::LoadedModel loaded,
                   moe::LoadModel(dir, {.backend = absl::GetFlag(FLAGS_backend),
                                        .comm = &comm,
                                        .max_tokens = absl::GetFlag(FLAGS_max_batched_tokens),
                                        .max_seqs = absl::GetFlag(FLAGS_max_seqs),
                                        .gemm_inputs = gemm_inputs}));
  moe::Model* model = loaded.model.get();
  if (comm.Rank() == 0) {
    std::cerr << "loaded " << model->info().architecture << " from " << dir << " on " << loaded.backend
              << (comm.Size() > 1 ? absl::StrCat(", experts over ", comm.Size(), " ranks") : "") << " in "
              << absl::FormatDuration(absl::Now() - load_start) << "\n";
  }

  const int block_size = absl::GetFlag(FLAGS_block_size);
  if (block_size < 1) return absl::InvalidArgumentError("--block_size must be a power of two >= 1");
  const int max_new = absl::GetFlag(FLAGS_max_new_tokens);
  int kv_blocks = absl::GetFlag(FLAGS_kv_blocks);
  if (kv_blocks == 0) {  // room for every prompt at once
    for (const auto& p : prompts) kv_blocks += (p.size() + max_new + block_size - 1) / block_size;
  }
  ASSIGN_OR_RETURN(
      std::unique_ptr<moe::Engine> engine_owner,
      moe::Engine::Create(*model, {.group = &comm,
                                   .num_kv_blocks = kv_blocks,
                                   .block_size = block_size,
                                   .scheduler = {.max_num_batched_tokens = absl::GetFlag(FLAGS_max_batched_tokens),
                                                 .max_num_seqs = absl::GetFlag(FLAGS_max_seqs)}}));
  moe::Engine& engine = *engine_owner;
  if (comm.Rank() != 0) return engine.RunGroupMember();  // rank 0 submits and prints
  std::vector<std::shared_ptr<Collector>> outputs;
  for (size_t i = 0; i < prompts.size(); ++i) {
    moe::Request request{.id = absl::StrCat(i), .prompt = prompts[i]};
    request.sampling.temperature = absl::GetFlag(FLAGS_temperature);
    request.sampling.top_p = absl::GetFlag(FLAGS_top_p);
    request.sampling.top_k = absl::GetFlag(FLAGS_top_k);
    request.sampling.seed = absl::GetFlag(FLAGS_seed) + i;
    request.stopping.max_tokens = max_new;
    request.stopping.ignore_eos = !absl::GetFlag(FLAGS_stop_at_eos);
    outputs.push_back(std::make_shared<Collector>());
    RETURN_IF_ERROR(engine.Submit(std::move(request), outputs.back()));
  }
  const absl::Time start = absl::Now();
  RETURN_IF_ERROR(engine.RunUntilIdle());
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  int64_t prompt_tokens = 0, new_tokens = 0;
  double ttft = 0, decode_rate = 0;
  for (const auto& out : outputs) {
    std::cout << absl::StrJoin(out->tokens, " ") << "\n";
    const moe::FinalOutput& f = out->final;
    prompt_tokens += f.usage.prompt_tokens;
    new_tokens += f.usage.completion_tokens;
    ttft += absl::ToDoubleSeconds(f.timings.time_to_first_token) / outputs.size();
    const double decode_s = absl::ToDoubleSeconds(f.timings.end_to_end - f.timings.time_to_first_token);
    if (f.usage.completion_tokens > 1) decode_rate += (f.usage.completion_tokens - 1) / decode_s / outputs.size();
  }
  const moe::EngineStats stats = engine.GetStats();
  std::cerr << absl::StrFormat(
      "%d prompts, %d prompt tokens, %d new tokens in %.3f s (%.2f new tokens/s), %d steps\n"
      "mean time to first token %.3f s; mean decode speed per sequence %.2f tokens/s\n",
      outputs.size(), prompt_tokens, new_tokens, seconds, new_tokens / seconds, stats.steps, ttft,
      decode_rate);
  engine.Stop();  // in a group, this releases the other ranks
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "Continues prompts of token ids with an MoE model.");
  absl::StatusOr<std::unique_ptr<moe::dist::Communicator>> comm = moe::dist::MakeCommunicator();
  if (!comm.ok()) {
    std::cerr << "moe-generate: " << comm.status().message() << "\n";
    return 1;
  }
  const absl::Status status = Run(**comm);
  if (!status.ok()) {
    std::cerr << "moe-generate (rank " << (*comm)->Rank() << "): " << status.message() << "\n";
    // The other ranks wait for this one in every step: end them too.
    if ((*comm)->Size() > 1) (*comm)->Abort(std::string(status.message()));
    return 1;
  }
  return 0;
}
