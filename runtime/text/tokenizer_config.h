// TokenizerConfig: what serving needs from a model's tokenizer_config.json: the special token
// strings, whether BOS / EOS are added, and the chat template.
//
//   ASSIGN_OR_RETURN(TokenizerConfig config, TokenizerConfig::FromFile(dir +
//   "/tokenizer_config.json")); if (config.add_bos_token.value_or(false)) ...
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe::text {

struct TokenizerConfig {
  // Each may be written as a string or as an AddedToken object {"content": ...}.
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<std::string> unk_token;
  std::optional<std::string> pad_token;
  // Set only when the file says so; they then override tokenizer.json's post-processor.
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
  std::string chat_template;  // the "default" template; empty if there is none
  nlohmann::json raw;         // the whole file

  static absl::StatusOr<TokenizerConfig> FromJson(const nlohmann::json& json);
  static absl::StatusOr<TokenizerConfig> FromFile(const std::string& path);
};

// The whole file as a string, or NotFound naming the path.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace moe::text
