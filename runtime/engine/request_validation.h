// ValidateRequest: everything about a request that can be checked before it is queued, with
// messages that name the field and say what was expected. Front ends may call it early; the
// engine calls it in Submit.
#pragma once

#include "absl/status/status.h"
#include "runtime/engine/request.h"
#include "runtime/model.h"

namespace moe {

struct RequestLimits {
  int vocab_size = 0;
  int max_context = 0;
  bool has_tokenizer = false;  // stop strings need detokenized text
};

inline constexpr int kMaxChoices = 128;
inline constexpr int kMaxLogprobs = 20;
inline constexpr int kMaxLogitBias = 1024;
inline constexpr float kMaxAbsLogitBias = 100.0f;
inline constexpr int kMaxStopTokenIds = 1024;
inline constexpr int kMaxStopStrings = 64;
inline constexpr int kMaxStopStringBytes = 1024;

absl::Status ValidateRequest(const Request& request, const RequestLimits& limits);

}  // namespace moe
