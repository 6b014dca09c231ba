// ValidateRequest: everything about a request that can be checked before it is queued, the
// one place where a request's rules live. Every front end (gRPC, HTTP, the batch tool) fills
// an engine Request and has it checked here, passing its own names for the fields, so the
// error names the field as the client wrote it ("sampling.top_p must be in (0, 1], got 1.5"
// over gRPC, "top_p ..." over HTTP). The engine checks again in Submit, with its own names.
//
//   RETURN_IF_ERROR(ValidateRequest(request, limits, GrpcFieldName));
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "runtime/engine/request.h"

namespace moe {

// The limits on what a client may ask, one set for every front end.
struct RequestCaps {
  int max_choices = 128;            // n
  int max_logprobs = 20;            // top logprobs per token
  int max_logit_bias = 1024;        // entries
  float max_abs_logit_bias = 100;
  int max_stop_token_ids = 1024;
  int max_stop_strings = 16;        // matched on every new token's text
  int max_stop_string_bytes = 256;
  int max_cache_salt_bytes = 256;   // hashed at every prefix-cache lookup
  int max_chat_messages = 4096;     // rendered with the chat template, then encoded
};
inline constexpr RequestCaps kRequestCaps{};

struct RequestLimits {
  int vocab_size = 0;
  int max_context = 0;
  bool has_tokenizer = false;  // stop strings need detokenized text
};

// The fields an error can be about, in the engine's own words.
enum class RequestField {
  kPrompt, kTemperature, kTopK, kTopP, kMinP, kRepetitionPenalty, kPresencePenalty,
  kFrequencyPenalty, kN, kLogprobs, kLogitBias, kMaxTokens, kMinTokens, kStopTokenIds, kStop,
  kTimeLimit, kCacheSalt,
};
inline constexpr int kNumRequestFields = static_cast<int>(RequestField::kCacheSalt) + 1;

// How a front end spells a field; `index` is the element of a list field (a prompt token,
// a stop string, the token of a logit bias), -1 for the field itself.
using FieldNames = std::function<std::string(RequestField field, int64_t index)>;
// A front end's name for each field, in RequestField order.
using FieldNameTable = std::array<const char*, kNumRequestFields>;
// "name", or "name[index]" for an element; `table` must outlive them (a static table).
FieldNames NamesFrom(const FieldNameTable& table);
// The engine's names: "top_p", "stop[2]", "logit_bias[99]".
std::string EngineFieldName(RequestField field, int64_t index);

// Errors are InvalidArgument naming the field, FailedPrecondition for what the engine cannot
// do (stop strings without a tokenizer).
absl::Status ValidateRequest(const Request& request, const RequestLimits& limits,
                             const FieldNames& names = EngineFieldName);

}  // namespace moe
