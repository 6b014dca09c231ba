// ChatTemplate: renders a model's chat_template (from tokenizer_config.json) the way
// transformers' apply_chat_template(tokenize=False) does, byte for byte, with a Jinja2 subset
// interpreter (runtime/text/jinja/; parser.h lists the supported constructs, and anything
// else fails to load or render with a message naming it).
//
// Template variables: messages, add_generation_prompt, tools and documents (None unless
// given), bos_token / eos_token / unk_token / pad_token from the config, and any extra ones
// (e.g. enable_thinking for Qwen3).
//
//   ASSIGN_OR_RETURN(ChatTemplate chat, ChatTemplate::FromConfig(tokenizer->config()));
//   ASSIGN_OR_RETURN(std::string prompt, chat.Render({.messages = messages,
//                                                     .add_generation_prompt = true}));
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/text/jinja/ast.h"
#include "runtime/text/tokenizer_config.h"

namespace moe::text {

struct ChatTemplateInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // [{"role", "content"}..]
  bool add_generation_prompt = false;
  nlohmann::ordered_json tools;                                     // null: no tools
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  // more variables
};

class ChatTemplate {
 public:
  // Parses `source`; `special_tokens` maps names like "bos_token" to their strings.
  static absl::StatusOr<ChatTemplate> Create(const std::string& source,
                                             const nlohmann::ordered_json& special_tokens);
  // The config's default chat_template with its special tokens; NotFound if it has none.
  static absl::StatusOr<ChatTemplate> FromConfig(const TokenizerConfig& config);

  // InvalidArgument for a conversation the template refuses (its raise_exception message,
  // prefixed "chat template raised: ") or for an error while rendering.
  absl::StatusOr<std::string> Render(const ChatTemplateInputs& inputs) const;

 private:
  std::shared_ptr<const jinja::Body> tree_;
  nlohmann::ordered_json special_tokens_;
};

}  // namespace moe::text
