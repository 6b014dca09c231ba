// Prompt encoding for every front end: text encoded with the model's tokenizer, or a
// conversation rendered with its chat template first. Errors are InvalidArgument naming
// `field` as the front end spells it ("input.text" over gRPC, "prompt" or "messages" over
// HTTP), or FailedPrecondition for what the model cannot do (no tokenizer, no template).
//
//   ASSIGN_OR_RETURN(std::vector<int32_t> ids, EncodeText(text, true, serving, "prompt"));
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/text/chat_template.h"
#include "server/serving_model.h"

namespace moe::server {

absl::StatusOr<std::vector<int32_t>> EncodeText(const std::string& text, bool add_special_tokens,
                                                const ServingModel& serving, const std::string& field);
absl::StatusOr<std::vector<int32_t>> EncodeConversation(const text::ChatTemplateInputs& inputs,
                                                        const ServingModel& serving,
                                                        const std::string& field);

}  // namespace moe::server
