// moe-make-model: writes a random-weight model in Hugging Face layout for any supported
// config.json (for example those in ../shared/configs), with overrides, deterministic
// from a seed. Per-expert tensors as the architecture names them, bf16 or f32, sharded
// with model.safetensors.index.json when larger than --max_shard_bytes.
//
//   moe-make-model --config qwen3-30b-a3b.json --layers 4 --out /tmp/qwen3-4l
//   moe-make-model --config mixtral-8x7b.json --hidden_size 256 --dtype f32 --out /tmp/mx
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "moe/config.h"
#include "nlohmann/json.hpp"
#include "tools/random_model.h"
#include "runtime/status_macros.h"

ABSL_FLAG(std::string, config, "", "config.json to start from");
ABSL_FLAG(std::string, out, "", "output directory (created)");
ABSL_FLAG(std::string, dtype, "bf16", "weight dtype: bf16 or f32");
ABSL_FLAG(uint64_t, seed, 0, "random seed");
ABSL_FLAG(double, init_std, 0.0, "weight std (default: initializer_range, else 0.02)");
ABSL_FLAG(int64_t, max_shard_bytes, int64_t{4} << 30, "largest shard before splitting");
ABSL_FLAG(int, layers, 0, "override num_hidden_layers");
ABSL_FLAG(int, hidden_size, 0, "override hidden_size");
ABSL_FLAG(int, heads, 0, "override num_attention_heads");
ABSL_FLAG(int, kv_heads, 0, "override num_key_value_heads");
ABSL_FLAG(int, head_dim, 0, "override head_dim");
ABSL_FLAG(int, experts, 0, "override the number of experts");
ABSL_FLAG(int, top_k, 0, "override num_experts_per_tok");
ABSL_FLAG(int, expert_intermediate_size, 0, "override the expert width");
ABSL_FLAG(int, vocab_size, 0, "override vocab_size");
ABSL_FLAG(int, max_position_embeddings, 0, "override max_position_embeddings");

namespace {

using nlohmann::json;

absl::StatusOr<json> ReadJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return j;
}

// Applies the command-line overrides under the architecture's own key names.
void ApplyOverrides(json& j) {
  const std::string type = j.value("model_type", "");
  const bool mixtral = type == "mixtral";
  const bool qwen = type == "qwen3_moe" || type == "qwen2_moe";
  auto set = [&](const char* key, int value) {
    if (value > 0) j[key] = value;
  };
  set("num_hidden_layers", absl::GetFlag(FLAGS_layers));
  set("hidden_size", absl::GetFlag(FLAGS_hidden_size));
  set("num_attention_heads", absl::GetFlag(FLAGS_heads));
  set("num_key_value_heads", absl::GetFlag(FLAGS_kv_heads));
  set("head_dim", absl::GetFlag(FLAGS_head_dim));
  set(mixtral ? "num_local_experts" : "num_experts", absl::GetFlag(FLAGS_experts));
  set("num_experts_per_tok", absl::GetFlag(FLAGS_top_k));
  set(qwen ? "moe_intermediate_size" : "intermediate_size", absl::GetFlag(FLAGS_expert_intermediate_size));
  set("vocab_size", absl::GetFlag(FLAGS_vocab_size));
  set("max_position_embeddings", absl::GetFlag(FLAGS_max_position_embeddings));
  if (j.contains("mlp_only_layers") && j["mlp_only_layers"].is_array()) {
    json kept = json::array();
    for (const json& l : j["mlp_only_layers"]) {
      if (l.is_number_integer() && l.get<int>() < j.value("num_hidden_layers", 0)) kept.push_back(l);
    }
    j["mlp_only_layers"] = kept;
  }
  const bool f32 = absl::GetFlag(FLAGS_dtype) == "f32";
  j.erase("dtype");
  j["torch_dtype"] = f32 ? "float32" : "bfloat16";
}

absl::Status Run() {
  const std::string config_path = absl::GetFlag(FLAGS_config);
  const std::string out_dir = absl::GetFlag(FLAGS_out);
  if (config_path.empty() || out_dir.empty()) {
    return absl::InvalidArgumentError("--config and --out are required");
  }
  ASSIGN_OR_RETURN(json j, ReadJson(config_path));
  ApplyOverrides(j);
  moe::RandomModelOptions options;
  ASSIGN_OR_RETURN(options.dtype, moe::DTypeFromName(absl::GetFlag(FLAGS_dtype)));
  options.seed = absl::GetFlag(FLAGS_seed);
  options.init_std = static_cast<float>(absl::GetFlag(FLAGS_init_std) > 0
                                            ? absl::GetFlag(FLAGS_init_std)
                                            : j.value("initializer_range", 0.02));
  options.max_shard_bytes = absl::GetFlag(FLAGS_max_shard_bytes);
  ASSIGN_OR_RETURN(int64_t bytes, moe::WriteRandomModel(j, options, out_dir));
  ASSIGN_OR_RETURN(moe::MoeConfig config, moe::ParseConfig(j.dump()));
  std::cout << absl::StrFormat("wrote %s: %s, %d layers, %d experts (top-%d), %.2f GB\n", out_dir,
                               config.architecture_name, config.num_layers, config.num_experts,
                               config.top_k, bytes / 1e9);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "Writes a random-weight MoE model in Hugging Face layout.");
  const absl::Status status = Run();
  if (!status.ok()) {
    std::cerr << "moe-make-model: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
