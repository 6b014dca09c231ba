// moe-generate: loads a model directory and greedily continues prompts given as token ids.
// The seed of the offline batch generator.
//
//   moe-generate --model /models/qwen3 --prompts "1 2 3; 7 8" --max_new_tokens 16
//   moe-generate --model /models/qwen3 --prompts_file prompts.txt   # one prompt per line
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "moe/moe_model.h"
#include "runtime/sequence_runner.h"
#include "runtime/status_macros.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json + safetensors)");
ABSL_FLAG(std::string, prompts, "",
          "prompts as token ids separated by spaces or commas, prompts separated by ';'");
ABSL_FLAG(std::string, prompts_file, "", "file with one prompt of token ids per line");
ABSL_FLAG(int, max_new_tokens, 16, "tokens to generate per prompt");
ABSL_FLAG(int, block_size, 16, "KV cache block size (a power of two)");
ABSL_FLAG(int, prefill_chunk, 0, "prompt tokens per sequence per step (0: whole prompt)");
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

absl::Status Run() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  ASSIGN_OR_RETURN(auto prompts, ReadPrompts());
  const absl::Time load_start = absl::Now();
  ASSIGN_OR_RETURN(std::unique_ptr<moe::MoeModel> model, moe::MoeModel::Load(dir));
  std::cerr << "loaded " << model->info().architecture << " from " << dir << " in "
            << absl::FormatDuration(absl::Now() - load_start) << "\n";

  const moe::GreedyOptions options{.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens),
                                   .block_size = absl::GetFlag(FLAGS_block_size),
                                   .prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk),
                                   .stop_at_eos = absl::GetFlag(FLAGS_stop_at_eos)};
  ASSIGN_OR_RETURN(moe::GreedyOutput out, moe::RunGreedy(*model, prompts, options));
  for (size_t i = 0; i < out.sequences.size(); ++i) {
    std::cout << absl::StrJoin(out.sequences[i].tokens, " ") << "\n";
  }
  int64_t prompt_tokens = 0;
  for (const auto& p : prompts) prompt_tokens += p.size();
  const moe::GreedyTimings& t = out.timings;
  std::cerr << absl::StrFormat("prefill: %d tokens in %.3f s (%.1f tokens/s)\n", prompt_tokens,
                               t.prefill_seconds, prompt_tokens / std::max(t.prefill_seconds, 1e-9));
  if (t.decode_steps > 0) {
    std::cerr << absl::StrFormat(
        "decode: %d steps, %d tokens in %.3f s (%.2f tokens/s, %.1f ms/step at batch %d)\n",
        t.decode_steps, t.decode_tokens, t.decode_seconds, t.decode_tokens / t.decode_seconds,
        1e3 * t.decode_seconds / t.decode_steps, prompts.size());
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Greedily continues prompts of token ids with an MoE model.");
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = Run();
  if (!status.ok()) {
    std::cerr << "moe-generate: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
