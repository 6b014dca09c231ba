#include "moe/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/status_macros.h"

namespace moe {
namespace {

using nlohmann::json;

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", what));
}

// A required positive integer.
absl::StatusOr<int> PositiveInt(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return Bad(absl::StrCat("missing \"", key, "\""));
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0 ||
      j[key].get<int64_t>() > (int64_t{1} << 30)) {
    return Bad(absl::StrCat("\"", key, "\" must be a positive integer, got ", j[key].dump()));
  }
  return j[key].get<int>();
}

absl::StatusOr<int> OptionalInt(const json& j, const char* key, int fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number_integer() || j[key].get<int64_t>() < 0 ||
      j[key].get<int64_t>() > (int64_t{1} << 30)) {
    return Bad(absl::StrCat("\"", key, "\" must be a non-negative integer, got ", j[key].dump()));
  }
  return j[key].get<int>();
}

// A string value, or `fallback` when the key is absent or null.
absl::StatusOr<std::string> OptionalString(const json& j, const char* key, const std::string& fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) return Bad(absl::StrCat("\"", key, "\" must be a string, got ", j[key].dump()));
  return j[key].get<std::string>();
}

absl::StatusOr<double> OptionalNumber(const json& j, const char* key, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) return Bad(absl::StrCat("\"", key, "\" must be a number"));
  return j[key].get<double>();
}

absl::StatusOr<bool> OptionalBool(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) return Bad(absl::StrCat("\"", key, "\" must be true or false"));
  return j[key].get<bool>();
}

// eos_token_id is an int or a list of ints.
absl::Status AppendEos(const json& j, std::vector<int>& out) {
  if (!j.contains("eos_token_id") || j["eos_token_id"].is_null()) return absl::OkStatus();
  const json& eos = j["eos_token_id"];
  for (const json& id : eos.is_array() ? eos : json::array({eos})) {
    if (!id.is_number_integer()) return Bad("eos_token_id must be an integer or a list of them");
    if (std::find(out.begin(), out.end(), id.get<int>()) == out.end()) out.push_back(id.get<int>());
  }
  return absl::OkStatus();
}

absl::StatusOr<Architecture> ParseArchitecture(const json& j, std::string& name) {
  struct Known {
    const char* architecture;
    const char* model_type;
    Architecture arch;
  };
  static constexpr Known kKnown[] = {
      {"Qwen3MoeForCausalLM", "qwen3_moe", Architecture::kQwen3Moe},
      {"MixtralForCausalLM", "mixtral", Architecture::kMixtral},
      {"OlmoeForCausalLM", "olmoe", Architecture::kOlmoe},
      {"Qwen2MoeForCausalLM", "qwen2_moe", Architecture::kQwen2Moe},
  };
  ASSIGN_OR_RETURN(std::string model_type, OptionalString(j, "model_type", ""));
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty()) {
    name = j["architectures"][0].is_string() ? j["architectures"][0].get<std::string>() : "";
  }
  for (const Known& k : kKnown) {
    if (name == k.architecture || (name.empty() && model_type == k.model_type)) {
      name = k.architecture;
      return k.arch;
    }
  }
  std::vector<std::string> supported;
  for (const Known& k : kKnown) supported.push_back(k.architecture);
  return absl::UnimplementedError(absl::StrCat(
      "config.json: unsupported architecture \"", name.empty() ? model_type : name,
      "\" (supported: ", absl::StrJoin(supported, ", "), ")"));
}

absl::Status ParseRope(const json& j, MoeConfig& c) {
  // v5 nests rope settings in rope_parameters; v4 has rope_theta and rope_scaling.
  const json* params = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) params = &j["rope_parameters"];
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) params = &j["rope_scaling"];
  ASSIGN_OR_RETURN(c.rope_theta, OptionalNumber(j, "rope_theta", 10000.0));
  if (params != nullptr) {
    ASSIGN_OR_RETURN(c.rope_theta, OptionalNumber(*params, "rope_theta", c.rope_theta));
    ASSIGN_OR_RETURN(std::string legacy_type, OptionalString(*params, "type", "default"));
    ASSIGN_OR_RETURN(std::string type, OptionalString(*params, "rope_type", legacy_type));
    if (type != "default") {
      return absl::UnimplementedError(
          absl::StrCat("config.json: rope type \"", type, "\" is not supported yet (only default)"));
    }
  }
  if (c.rope_theta <= 0) return Bad("rope_theta must be positive");
  return absl::OkStatus();
}

absl::Status ParseAttention(const json& j, MoeConfig& c) {
  ASSIGN_OR_RETURN(c.num_heads, PositiveInt(j, "num_attention_heads"));
  ASSIGN_OR_RETURN(c.num_kv_heads, OptionalInt(j, "num_key_value_heads", c.num_heads));
  ASSIGN_OR_RETURN(c.head_dim, OptionalInt(j, "head_dim", c.hidden_size / c.num_heads));
  if (c.num_kv_heads == 0 || c.num_heads % c.num_kv_heads != 0) {
    return Bad(absl::StrCat("num_attention_heads (", c.num_heads,
                            ") must be a multiple of num_key_value_heads (", c.num_kv_heads, ")"));
  }
  if (c.head_dim == 0 || c.head_dim % 2 != 0) {
    return Bad(absl::StrCat("head_dim must be even and positive, got ", c.head_dim));
  }
  switch (c.arch) {
    case Architecture::kQwen3Moe: {
      c.qk_norm = QkNorm::kPerHead;
      ASSIGN_OR_RETURN(c.attention_bias, OptionalBool(j, "attention_bias", false));
      break;
    }
    case Architecture::kQwen2Moe: {
      // Qwen2 always has q/k/v biases; newer configs may spell it out.
      ASSIGN_OR_RETURN(c.attention_bias, OptionalBool(j, "qkv_bias", true));
      break;
    }
    case Architecture::kOlmoe: {
      c.qk_norm = QkNorm::kWholeProjection;
      ASSIGN_OR_RETURN(c.attention_bias, OptionalBool(j, "attention_bias", false));
      ASSIGN_OR_RETURN(double clip, OptionalNumber(j, "clip_qkv", 0.0));
      c.clip_qkv = static_cast<float>(clip);
      break;
    }
    case Architecture::kMixtral: {
      ASSIGN_OR_RETURN(c.sliding_window, OptionalInt(j, "sliding_window", 0));
      break;
    }
  }
  ASSIGN_OR_RETURN(const bool use_sliding_window, OptionalBool(j, "use_sliding_window", false));
  if ((c.arch == Architecture::kQwen3Moe || c.arch == Architecture::kQwen2Moe) && use_sliding_window) {
    return absl::UnimplementedError("config.json: use_sliding_window is not supported yet");
  }
  return absl::OkStatus();
}

absl::Status ParseExperts(const json& j, MoeConfig& c) {
  const bool mixtral = c.arch == Architecture::kMixtral;
  // Mixtral says num_local_experts, the others num_experts; transformers v5 writes either.
  const char* experts_key = j.contains("num_experts") && !j["num_experts"].is_null() ? "num_experts" : "num_local_experts";
  ASSIGN_OR_RETURN(c.num_experts, PositiveInt(j, experts_key));
  ASSIGN_OR_RETURN(c.top_k, PositiveInt(j, "num_experts_per_tok"));
  if (c.top_k > c.num_experts) {
    return Bad(absl::StrCat("num_experts_per_tok (", c.top_k, ") exceeds the number of experts (",
                            c.num_experts, ")"));
  }
  const bool qwen = c.arch == Architecture::kQwen3Moe || c.arch == Architecture::kQwen2Moe;
  ASSIGN_OR_RETURN(c.expert_intermediate_size,
                   PositiveInt(j, qwen ? "moe_intermediate_size" : "intermediate_size"));
  c.norm_topk_prob = mixtral;  // Mixtral always renormalizes
  if (!mixtral) {
    ASSIGN_OR_RETURN(c.norm_topk_prob, OptionalBool(j, "norm_topk_prob", false));
  }
  if (qwen) {
    ASSIGN_OR_RETURN(c.dense_intermediate_size, OptionalInt(j, "intermediate_size", 0));
    ASSIGN_OR_RETURN(c.decoder_sparse_step, OptionalInt(j, "decoder_sparse_step", 1));
    if (j.contains("mlp_only_layers") && !j["mlp_only_layers"].is_null()) {
      if (!j["mlp_only_layers"].is_array()) return Bad("mlp_only_layers must be a list");
      for (const json& l : j["mlp_only_layers"]) {
        if (!l.is_number_integer()) return Bad("mlp_only_layers must hold integers");
        c.mlp_only_layers.push_back(l.get<int>());
      }
    }
    for (int l = 0; l < c.num_layers; ++l) {
      if (!c.IsMoeLayer(l) && c.dense_intermediate_size == 0) {
        return Bad(absl::StrCat("layer ", l, " is a dense MLP but intermediate_size is missing"));
      }
    }
  }
  if (c.arch == Architecture::kQwen2Moe) {
    ASSIGN_OR_RETURN(c.shared_expert_intermediate_size,
                     PositiveInt(j, "shared_expert_intermediate_size"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<MoeConfig> ParseObject(const json& j);

}  // namespace

bool MoeConfig::IsMoeLayer(int layer) const {
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end()) {
    return false;
  }
  return num_experts > 0 && (layer + 1) % std::max(1, decoder_sparse_step) == 0;
}

absl::StatusOr<MoeConfig> ParseConfig(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    return Bad(absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return Bad("expected a JSON object");
  // The parsers check every type they read; this only turns a missed case into an error.
  try {
    return ParseObject(j);
  } catch (const json::exception& e) {
    return Bad(absl::StrCat("unexpected value: ", e.what()));
  }
}

namespace {

absl::StatusOr<MoeConfig> ParseObject(const json& j) {
  MoeConfig c;
  ASSIGN_OR_RETURN(c.arch, ParseArchitecture(j, c.architecture_name));
  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    return absl::UnimplementedError(
        "config.json: quantized checkpoints (quantization_config) are not supported yet");
  }
  ASSIGN_OR_RETURN(c.vocab_size, PositiveInt(j, "vocab_size"));
  ASSIGN_OR_RETURN(c.hidden_size, PositiveInt(j, "hidden_size"));
  ASSIGN_OR_RETURN(c.num_layers, PositiveInt(j, "num_hidden_layers"));
  ASSIGN_OR_RETURN(c.max_position_embeddings, PositiveInt(j, "max_position_embeddings"));
  // transformers' defaults: 1e-5 for Mixtral and OLMoE, 1e-6 for the Qwen models.
  const bool qwen = c.arch == Architecture::kQwen3Moe || c.arch == Architecture::kQwen2Moe;
  ASSIGN_OR_RETURN(double eps, OptionalNumber(j, "rms_norm_eps", qwen ? 1e-6 : 1e-5));
  c.rms_norm_eps = static_cast<float>(eps);
  ASSIGN_OR_RETURN(c.tie_word_embeddings, OptionalBool(j, "tie_word_embeddings", false));
  RETURN_IF_ERROR(ParseAttention(j, c));
  RETURN_IF_ERROR(ParseRope(j, c));
  RETURN_IF_ERROR(ParseExperts(j, c));
  const char* dtype_key = j.contains("dtype") ? "dtype" : "torch_dtype";
  if (j.contains(dtype_key) && j[dtype_key].is_string()) {  // anything else: bf16 assumed
    absl::StatusOr<DType> dtype = DTypeFromName(j[dtype_key].get<std::string>());
    if (!dtype.ok()) return Bad(absl::StrCat(dtype_key, ": ", dtype.status().message()));
    c.dtype = *dtype;
  }
  RETURN_IF_ERROR(AppendEos(j, c.eos_token_ids));
  return c;
}

}  // namespace

absl::StatusOr<MoeConfig> LoadConfigFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  absl::StatusOr<MoeConfig> config = ParseConfig(text);
  if (!config.ok()) return absl::Status(config.status().code(), absl::StrCat(path, ": ", config.status().message()));
  return config;
}

absl::StatusOr<MoeConfig> LoadConfig(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  ASSIGN_OR_RETURN(std::string text, ReadFile(dir / "config.json"));
  absl::StatusOr<MoeConfig> config = ParseConfig(text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(model_dir, "/", config.status().message()));
  }
  if (std::filesystem::exists(dir / "generation_config.json")) {
    ASSIGN_OR_RETURN(std::string gen_text, ReadFile(dir / "generation_config.json"));
    json gen = json::parse(gen_text, nullptr, /*allow_exceptions=*/false);
    if (gen.is_discarded() || !gen.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, "/generation_config.json: not valid JSON"));
    }
    RETURN_IF_ERROR(AppendEos(gen, config->eos_token_ids));
  }
  return config;
}

}  // namespace moe
