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
#include "absl/flags/usage.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "moe/config.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
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

namespace fs = std::filesystem;
using nlohmann::json;
using moe::Architecture;
using moe::DType;
using moe::MoeConfig;
using moe::TensorSpec;

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
      if (l.get<int>() < j["num_hidden_layers"].get<int>()) kept.push_back(l);
    }
    j["mlp_only_layers"] = kept;
  }
  const bool f32 = absl::GetFlag(FLAGS_dtype) == "f32";
  j.erase("dtype");
  j["torch_dtype"] = f32 ? "float32" : "bfloat16";
}

// The tensors of a Hugging Face checkpoint of this config, named as transformers names them.
std::vector<TensorSpec> Layout(const MoeConfig& c, DType dtype) {
  const int64_t D = c.hidden_size, V = c.vocab_size, q = int64_t{c.num_heads} * c.head_dim,
                kv = int64_t{c.num_kv_heads} * c.head_dim;
  std::vector<TensorSpec> specs;
  auto add = [&](std::string name, moe::Shape shape) {
    specs.push_back({std::move(name), dtype, std::move(shape)});
  };
  auto mlp = [&](const std::string& p, int64_t I, const char* g, const char* u, const char* d) {
    add(absl::StrCat(p, ".", g, ".weight"), {I, D});
    add(absl::StrCat(p, ".", u, ".weight"), {I, D});
    add(absl::StrCat(p, ".", d, ".weight"), {D, I});
  };
  add("model.embed_tokens.weight", {V, D});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l);
    add(p + ".input_layernorm.weight", {D});
    add(p + ".self_attn.q_proj.weight", {q, D});
    add(p + ".self_attn.k_proj.weight", {kv, D});
    add(p + ".self_attn.v_proj.weight", {kv, D});
    add(p + ".self_attn.o_proj.weight", {D, q});
    if (c.attention_bias) {
      add(p + ".self_attn.q_proj.bias", {q});
      add(p + ".self_attn.k_proj.bias", {kv});
      add(p + ".self_attn.v_proj.bias", {kv});
    }
    if (c.qk_norm != moe::QkNorm::kNone) {
      const bool whole = c.qk_norm == moe::QkNorm::kWholeProjection;
      add(p + ".self_attn.q_norm.weight", {whole ? q : c.head_dim});
      add(p + ".self_attn.k_norm.weight", {whole ? kv : c.head_dim});
    }
    add(p + ".post_attention_layernorm.weight", {D});
    if (!c.IsMoeLayer(l)) {
      mlp(p + ".mlp", c.dense_intermediate_size, "gate_proj", "up_proj", "down_proj");
      continue;
    }
    const bool mixtral = c.arch == Architecture::kMixtral;
    const std::string ffn = p + (mixtral ? ".block_sparse_moe" : ".mlp");
    add(ffn + ".gate.weight", {c.num_experts, D});
    for (int e = 0; e < c.num_experts; ++e) {
      const std::string expert = absl::StrCat(ffn, ".experts.", e);
      if (mixtral) {
        mlp(expert, c.expert_intermediate_size, "w1", "w3", "w2");
      } else {
        mlp(expert, c.expert_intermediate_size, "gate_proj", "up_proj", "down_proj");
      }
    }
    if (c.shared_expert_intermediate_size > 0) {
      mlp(ffn + ".shared_expert", c.shared_expert_intermediate_size, "gate_proj", "up_proj", "down_proj");
      add(ffn + ".shared_expert_gate.weight", {1, D});
    }
  }
  add("model.norm.weight", {D});
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, D});
  return specs;
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Norm weights are 1 (as transformers initializes them); everything else is uniform with
// the requested std, from a stream keyed by (seed, tensor name, chunk) so the values do not
// depend on sharding or thread count.
void Fill(const TensorSpec& spec, absl::Span<std::byte> out, uint64_t seed, float std) {
  const int64_t n = moe::NumElements(spec.shape);
  const bool is_norm = spec.name.ends_with("norm.weight");
  const float half_width = std * 1.7320508f;  // uniform(-a, a) has std a / sqrt(3)
  const uint64_t tensor_seed = seed ^ absl::HashOf(spec.name);
  constexpr int64_t kChunk = 1 << 16;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    uint64_t state = tensor_seed + 0x632be59bd9b4e019ull * (c0 / kChunk + 1);
    const int64_t end = std::min(n, c0 + kChunk);
    std::vector<float> values(end - c0);
    for (float& v : values) {
      const float u = static_cast<float>(SplitMix64(state) >> 40) * (1.0f / 16777216.0f);
      v = is_norm ? 1.0f : (2.0f * u - 1.0f) * half_width;
    }
    moe::ConvertFromFloat(values.data(), spec.dtype, out.data() + c0 * moe::DTypeSize(spec.dtype),
                          values.size());
  }
}

absl::Status WriteJson(const fs::path& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ", path.string()));
  return absl::OkStatus();
}

absl::Status Run() {
  const std::string config_path = absl::GetFlag(FLAGS_config);
  const fs::path out_dir = absl::GetFlag(FLAGS_out);
  if (config_path.empty() || out_dir.empty()) return absl::InvalidArgumentError("--config and --out are required");
  ASSIGN_OR_RETURN(json j, ReadJson(config_path));
  ApplyOverrides(j);
  ASSIGN_OR_RETURN(MoeConfig config, moe::ParseConfig(j.dump()));
  ASSIGN_OR_RETURN(DType dtype, moe::DTypeFromName(absl::GetFlag(FLAGS_dtype)));
  const float std = static_cast<float>(absl::GetFlag(FLAGS_init_std) > 0
                                           ? absl::GetFlag(FLAGS_init_std)
                                           : j.value("initializer_range", 0.02));
  fs::create_directories(out_dir);

  // Greedy sharding in layout order.
  const std::vector<TensorSpec> specs = Layout(config, dtype);
  std::vector<std::vector<TensorSpec>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (const TensorSpec& spec : specs) {
    const int64_t bytes = moe::NumElements(spec.shape) * moe::DTypeSize(spec.dtype);
    if (shard_bytes > 0 && shard_bytes + bytes > absl::GetFlag(FLAGS_max_shard_bytes)) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(spec);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  auto fill = [&](const TensorSpec& spec, absl::Span<std::byte> bytes) { Fill(spec, bytes, seed, std); };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (shards.size() == 1) {
    RETURN_IF_ERROR(moe::WriteSafetensors((out_dir / "model.safetensors").string(), shards[0], fill, metadata));
  } else {
    json weight_map = json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
      RETURN_IF_ERROR(moe::WriteSafetensors((out_dir / name).string(), shards[s], fill, metadata));
      for (const TensorSpec& spec : shards[s]) weight_map[spec.name] = name;
      std::cerr << "wrote " << name << "\n";
    }
    RETURN_IF_ERROR(WriteJson(out_dir / "model.safetensors.index.json",
                              {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}}));
  }
  RETURN_IF_ERROR(WriteJson(out_dir / "config.json", j));
  json generation = {{"do_sample", false}};
  if (j.contains("bos_token_id")) generation["bos_token_id"] = j["bos_token_id"];
  if (j.contains("eos_token_id")) generation["eos_token_id"] = j["eos_token_id"];
  RETURN_IF_ERROR(WriteJson(out_dir / "generation_config.json", generation));
  std::cout << absl::StrFormat("wrote %s: %s, %d layers, %d experts (top-%d), %.2f GB in %d file(s)\n",
                               out_dir.string(), config.architecture_name, config.num_layers,
                               config.num_experts, config.top_k, total_bytes / 1e9, shards.size());
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Writes a random-weight MoE model in Hugging Face layout.");
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = Run();
  if (!status.ok()) {
    std::cerr << "moe-make-model: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
