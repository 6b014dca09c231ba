// OpenAI request parsing: the JSON body of POST /v1/completions or /v1/chat/completions
// turned into engine Requests (one per prompt; a completions prompt may be a list), then
// checked by the engine's one validation (runtime/engine/request_validation.h) under
// OpenAI's field names. Every error is an ApiError naming the field as `param`.
//
//   absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(Endpoint::kChat, body, serving);
//   if (!parsed.ok()) return ApiErrorOf(parsed.status());
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/request.h"
#include "server/field_error.h"
#include "server/serving_model.h"

namespace moe::server {

enum class Endpoint { kCompletions, kChat };

struct OpenAiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;
  std::vector<Request> prompts;  // one engine request per prompt, ids still empty
  std::vector<std::string> prompt_texts;  // completions with echo: each prompt as text
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions
  int logprobs = -1;           // -1: none; else how many top logprobs per token
};

// An error as OpenAI reports it: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};

// The HTTP status and error object for an engine or parsing status.
ApiError ApiErrorOf(const absl::Status& status);
std::string ErrorJson(const ApiError& error);

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(Endpoint endpoint, std::string_view body,
                                                 const ServingModel& serving);
// The same for a body already parsed (a line of a batch file).
absl::StatusOr<OpenAiRequest> ParseOpenAiBody(Endpoint endpoint, const nlohmann::json& body,
                                              const ServingModel& serving);

}  // namespace moe::server
