// MoeConfig: the parts of a Hugging Face config.json that the MoE transformer needs, for
// Qwen3-MoE, Mixtral, OLMoE and Qwen2-MoE.
//
// Accepts transformers v4 and v5 spellings (rope_theta or rope_parameters.rope_theta,
// torch_dtype or dtype). EOS ids come from config.json and generation_config.json.
//
//   ASSIGN_OR_RETURN(MoeConfig config, LoadConfig("/models/qwen3-30b-a3b"));
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/dtype.h"

namespace moe {

enum class Architecture { kQwen3Moe, kMixtral, kOlmoe, kQwen2Moe };

// Where q/k RMSNorm applies: none, each head (Qwen3), or the whole projection (OLMoE).
enum class QkNorm { kNone, kPerHead, kWholeProjection };

struct MoeConfig {
  Architecture arch = Architecture::kQwen3Moe;
  std::string architecture_name;  // "Qwen3MoeForCausalLM", ...
  int vocab_size = 0;
  int hidden_size = 0;            // D
  int num_layers = 0;
  int num_heads = 0;              // H
  int num_kv_heads = 0;           // KVH
  int head_dim = 0;               // hd
  int num_experts = 0;            // E
  int top_k = 0;                  // K
  int expert_intermediate_size = 0;         // I of each routed expert
  int dense_intermediate_size = 0;          // I of dense MLP layers (mlp_only_layers)
  int shared_expert_intermediate_size = 0;  // Qwen2-MoE; 0 = no shared expert
  bool norm_topk_prob = false;    // renormalize the top-k weights to sum to 1
  float rms_norm_eps = 1e-6f;
  double rope_theta = 10000.0;
  int max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;    // q/k/v projections carry a bias
  QkNorm qk_norm = QkNorm::kNone;
  int sliding_window = 0;         // 0 = full attention
  float clip_qkv = 0.0f;          // 0 = no clipping
  int decoder_sparse_step = 1;
  std::vector<int> mlp_only_layers;
  DType dtype = DType::kBF16;     // dtype the checkpoint declares
  std::vector<int> eos_token_ids;

  // Whether `layer` has routed experts (otherwise a dense MLP).
  bool IsMoeLayer(int layer) const;
};

// Parses config.json text. Errors name the key and what was expected.
absl::StatusOr<MoeConfig> ParseConfig(const std::string& json_text);

// Reads <dir>/config.json and, if present, <dir>/generation_config.json's eos_token_id.
absl::StatusOr<MoeConfig> LoadConfig(const std::string& model_dir);

// Reads a config.json file by itself (a config without its model, e.g. for benchmarks).
absl::StatusOr<MoeConfig> LoadConfigFile(const std::string& path);

}  // namespace moe
