// WriteRandomModel: a random-weight model in Hugging Face layout, for tests, benchmarks and
// the default model of scripts/serve.
//
// Writes config.json (as given), generation_config.json and the weights: per-expert tensors
// named as transformers names them for the architecture, sharded with an index when larger
// than max_shard_bytes. Values are deterministic from the seed, whatever the sharding.
//
//   nlohmann::json config = ...;   // a config.json
//   RETURN_IF_ERROR(WriteRandomModel(config, {.dtype = DType::kF32, .seed = 1}, "/tmp/m"));
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "moe/config.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"

namespace moe {

struct RandomModelOptions {
  DType dtype = DType::kBF16;
  uint64_t seed = 0;
  float init_std = 0.02f;
  int64_t max_shard_bytes = int64_t{4} << 30;
  // Lets a caller change the layout before writing (tests make broken models with it):
  // return false to leave a tensor out.
  std::function<bool(TensorSpec&)> edit_tensor;
};

// The tensors of a checkpoint of `config`, in file order.
std::vector<TensorSpec> CheckpointLayout(const MoeConfig& config, DType dtype);

// A Qwen3-MoE config small enough for a test to load in milliseconds: 2 layers, 8 experts,
// hidden size 64, a 128-token vocabulary.
nlohmann::json TinyQwen3Config();

// Returns the total bytes of weights written.
absl::StatusOr<int64_t> WriteRandomModel(const nlohmann::json& config,
                                         const RandomModelOptions& options, const std::string& dir);

}  // namespace moe
