// Request building: a moe.v1.GenerateRequest turned into the engine's Request (the prompt
// tokenized, or rendered with the chat template first), plus what the stream should carry,
// then checked by the engine's one validation (runtime/engine/request_validation.h) under
// the proto's field names. Every error is InvalidArgument (FailedPrecondition for what the
// model cannot do, such as text without a tokenizer) and names the field.
//
//   ASSIGN_OR_RETURN(BuiltRequest built, BuildRequest(proto, serving));
//   RETURN_IF_ERROR(engine.Submit(std::move(built.request), sink));
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "moe/v1/generation.pb.h"
#include "runtime/engine/request.h"
#include "server/prompt_encoding.h"
#include "server/serving_model.h"

namespace moe::server {

struct StreamOptions {
  bool token_ids = true;  // send token ids in chunks
  bool text = true;       // send text in chunks
};

struct BuiltRequest {
  Request request;  // id empty when the client gave none
  StreamOptions stream;
};

absl::StatusOr<BuiltRequest> BuildRequest(const v1::GenerateRequest& proto,
                                          const ServingModel& serving);

// The prompt of a Generate or Tokenize input: token ids checked against the vocabulary, or
// chat messages rendered and encoded (text: EncodeText in prompt_encoding.h).
// The prompt of a chat input, rendered with the model's template and encoded.
absl::StatusOr<std::vector<int32_t>> EncodeChat(const v1::Chat& chat, const ServingModel& serving);
absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                           const std::string& field, int vocab_size);

}  // namespace moe::server
