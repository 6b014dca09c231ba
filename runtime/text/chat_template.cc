// Chat template rendering (see chat_template.h).
#include "runtime/text/chat_template.h"

#include "runtime/status_macros.h"
#include "runtime/text/jinja/interpreter.h"
#include "runtime/text/jinja/parser.h"

namespace moe::text {

using ordered_json = nlohmann::ordered_json;

absl::StatusOr<ChatTemplate> ChatTemplate::Create(const std::string& source,
                                                  const ordered_json& special_tokens) {
  ASSIGN_OR_RETURN(jinja::Body tree, jinja::Parse(source));
  ChatTemplate chat;
  chat.tree_ = std::make_shared<const jinja::Body>(std::move(tree));
  chat.special_tokens_ = special_tokens.is_object() ? special_tokens : ordered_json::object();
  return chat;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromConfig(const TokenizerConfig& config) {
  if (config.chat_template.empty()) {
    return absl::NotFoundError("tokenizer_config.json has no chat_template");
  }
  ordered_json special = ordered_json::object();
  const std::pair<const char*, const std::optional<std::string>*> tokens[] = {
      {"bos_token", &config.bos_token},
      {"eos_token", &config.eos_token},
      {"unk_token", &config.unk_token},
      {"pad_token", &config.pad_token}};
  for (const auto& [name, value] : tokens) {
    if (value->has_value()) special[name] = **value;
  }
  return Create(config.chat_template, special);
}

absl::StatusOr<std::string> ChatTemplate::Render(const ChatTemplateInputs& inputs) const {
  jinja::Dict globals;
  globals.emplace_back("messages", jinja::Value::FromJson(inputs.messages));
  globals.emplace_back("add_generation_prompt", jinja::Value(inputs.add_generation_prompt));
  globals.emplace_back("tools", jinja::Value::FromJson(inputs.tools));
  globals.emplace_back("documents", jinja::Value::None());
  for (const auto& [name, value] : special_tokens_.items()) {
    globals.emplace_back(name, jinja::Value::FromJson(value));
  }
  if (inputs.extra.is_object()) {
    for (const auto& [name, value] : inputs.extra.items()) {
      globals.emplace_back(name, jinja::Value::FromJson(value));
    }
  }
  return jinja::Render(*tree_, globals);
}

}  // namespace moe::text
