#include "tools/random_model.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/status_macros.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// FNV-1a: a hash of the tensor name that is stable across runs (absl::Hash is not).
uint64_t StableHash(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
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
  const int64_t n = NumElements(spec.shape);
  if (spec.dtype == DType::kI32 || spec.dtype == DType::kI64) {
    std::fill(out.begin(), out.end(), std::byte{0});
    return;
  }
  const bool is_norm = spec.name.ends_with("norm.weight");
  const float half_width = std * 1.7320508f;  // uniform(-a, a) has std a / sqrt(3)
  const uint64_t tensor_seed = seed ^ StableHash(spec.name);
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
    ConvertFromFloat(values.data(), spec.dtype, out.data() + c0 * DTypeSize(spec.dtype),
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

}  // namespace

std::vector<TensorSpec> CheckpointLayout(const MoeConfig& c, DType dtype) {
  const int64_t D = c.hidden_size, V = c.vocab_size, q = int64_t{c.num_heads} * c.head_dim,
                kv = int64_t{c.num_kv_heads} * c.head_dim;
  std::vector<TensorSpec> specs;
  auto add = [&](std::string name, Shape shape) {
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
    if (c.qk_norm != QkNorm::kNone) {
      const bool whole = c.qk_norm == QkNorm::kWholeProjection;
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

absl::StatusOr<int64_t> WriteRandomModel(const json& j, const RandomModelOptions& options,
                                         const std::string& dir) {
  ASSIGN_OR_RETURN(MoeConfig config, ParseConfig(j.dump()));
  const fs::path out_dir(dir);
  fs::create_directories(out_dir);

  // Greedy sharding in layout order.
  std::vector<std::vector<TensorSpec>> shards(1);
  int64_t shard_bytes = 0, total_bytes = 0;
  for (TensorSpec& spec : CheckpointLayout(config, options.dtype)) {
    if (options.edit_tensor && !options.edit_tensor(spec)) continue;
    const int64_t bytes = NumElements(spec.shape) * DTypeSize(spec.dtype);
    if (shard_bytes > 0 && shard_bytes + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(spec);
    shard_bytes += bytes;
    total_bytes += bytes;
  }
  auto fill = [&](const TensorSpec& spec, absl::Span<std::byte> bytes) {
    Fill(spec, bytes, options.seed, options.init_std);
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (shards.size() == 1) {
    RETURN_IF_ERROR(WriteSafetensors((out_dir / "model.safetensors").string(), shards[0], fill, metadata));
  } else {
    json weight_map = json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string name = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
      RETURN_IF_ERROR(WriteSafetensors((out_dir / name).string(), shards[s], fill, metadata));
      for (const TensorSpec& spec : shards[s]) weight_map[spec.name] = name;
    }
    RETURN_IF_ERROR(WriteJson(out_dir / "model.safetensors.index.json",
                              {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}}));
  }
  RETURN_IF_ERROR(WriteJson(out_dir / "config.json", j));
  json generation = {{"do_sample", false}};
  if (j.contains("bos_token_id")) generation["bos_token_id"] = j["bos_token_id"];
  if (j.contains("eos_token_id")) generation["eos_token_id"] = j["eos_token_id"];
  RETURN_IF_ERROR(WriteJson(out_dir / "generation_config.json", generation));
  return total_bytes;
}

nlohmann::json TinyQwen3Config() {
  return {{"architectures", {"Qwen3MoeForCausalLM"}},
          {"model_type", "qwen3_moe"},
          {"vocab_size", 128},
          {"hidden_size", 64},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 32},
          {"num_experts", 8},
          {"num_experts_per_tok", 2},
          {"moe_intermediate_size", 32},
          {"intermediate_size", 96},
          {"norm_topk_prob", true},
          {"max_position_embeddings", 256},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0},
          {"eos_token_id", 127},
          {"torch_dtype", "float32"}};
}

}  // namespace moe
