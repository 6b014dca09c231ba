// tokenizer_config.json parsing (see tokenizer_config.h).
#include "runtime/text/tokenizer_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

std::optional<std::string> TokenString(const json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return std::nullopt;
}

std::optional<bool> OptionalBool(const json& config, const char* key) {
  if (!config.contains(key) || !config[key].is_boolean()) return std::nullopt;
  return config[key].get<bool>();
}

absl::StatusOr<std::string> ChatTemplate(const json& config) {
  if (!config.contains("chat_template") || config["chat_template"].is_null()) return "";
  const json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    // A list of named templates: serving uses the one named "default".
    for (const json& named : t) {
      if (named.value("name", "") == "default") return named.at("template").get<std::string>();
    }
    return "";
  }
  return absl::InvalidArgumentError("chat_template must be a string or a list of named templates");
}

}  // namespace

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<TokenizerConfig> TokenizerConfig::FromJson(const json& config) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError("tokenizer_config.json must hold a JSON object");
  }
  TokenizerConfig out;
  out.bos_token = TokenString(config, "bos_token");
  out.eos_token = TokenString(config, "eos_token");
  out.unk_token = TokenString(config, "unk_token");
  out.pad_token = TokenString(config, "pad_token");
  out.add_bos_token = OptionalBool(config, "add_bos_token");
  out.add_eos_token = OptionalBool(config, "add_eos_token");
  try {
    ASSIGN_OR_RETURN(out.chat_template, ChatTemplate(config));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad chat_template: ", e.what()));
  }
  out.raw = config;
  return out;
}

absl::StatusOr<TokenizerConfig> TokenizerConfig::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  json config = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, " is not JSON"));
  auto parsed = FromJson(config);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat(path, ": ", parsed.status().message()));
  }
  return parsed;
}

}  // namespace moe::text
