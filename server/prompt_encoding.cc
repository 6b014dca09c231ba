// Prompt encoding (see prompt_encoding.h).
#include "server/prompt_encoding.h"

#include "absl/strings/str_cat.h"
#include "runtime/engine/request_validation.h"
#include "server/field_error.h"

namespace moe::server {
namespace {

absl::Status NeedsTokenizer(const std::string& field) {
  return WithField(absl::FailedPreconditionError(
                       absl::StrCat(field, " needs a tokenizer, and this model has none: send token ids")),
                   field);
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> EncodeText(const std::string& text, bool add_special_tokens,
                                                const ServingModel& serving, const std::string& field) {
  if (serving.tokenizer() == nullptr) return NeedsTokenizer(field);
  if (text.empty()) return BadField(field, "is empty");
  absl::StatusOr<std::vector<int32_t>> ids =
      serving.tokenizer()->Encode(text, {.add_special_tokens = add_special_tokens});
  if (!ids.ok()) return BadField(field, std::string(ids.status().message()));
  if (ids->empty()) return BadField(field, "encodes to no tokens");
  const int vocab_size = serving.model().info().vocab_size;
  for (int32_t id : *ids) {
    if (id >= vocab_size) {
      return BadField(field,
                 absl::StrCat("encodes to id ", id, ", past the model's vocabulary (size ",
                              vocab_size, ")"));
    }
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> EncodeConversation(const text::ChatTemplateInputs& inputs,
                                                        const ServingModel& serving,
                                                        const std::string& field) {
  if (inputs.messages.size() > static_cast<size_t>(kRequestCaps.max_chat_messages)) {
    return BadField(field, absl::StrCat("has ", inputs.messages.size(), " messages, at most ",
                                        kRequestCaps.max_chat_messages));
  }
  if (serving.tokenizer() == nullptr) return NeedsTokenizer(field);
  if (serving.chat_template() == nullptr) {
    return WithField(absl::FailedPreconditionError(
                         absl::StrCat(field, " needs a chat template, and this model has none")),
                     field);
  }
  absl::StatusOr<std::string> rendered = serving.chat_template()->Render(inputs);
  if (!rendered.ok()) return BadField(field, std::string(rendered.status().message()));
  // The template writes the special tokens itself.
  return EncodeText(*rendered, /*add_special_tokens=*/false, serving, field);
}

}  // namespace moe::server
