#include "runtime/engine/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

absl::Status ValidateSampling(const SamplingParams& s, int vocab_size) {
  if (!(s.temperature >= 0 && std::isfinite(s.temperature))) {
    return Bad(absl::StrCat("temperature must be finite and >= 0, got ", s.temperature));
  }
  if (s.top_k < 0) return Bad(absl::StrCat("top_k must be >= 0, got ", s.top_k));
  if (!(s.top_p > 0 && s.top_p <= 1)) return Bad(absl::StrCat("top_p must be in (0, 1], got ", s.top_p));
  if (!(s.min_p >= 0 && s.min_p <= 1)) return Bad(absl::StrCat("min_p must be in [0, 1], got ", s.min_p));
  if (!(s.repetition_penalty > 0 && std::isfinite(s.repetition_penalty))) {
    return Bad(absl::StrCat("repetition_penalty must be finite and > 0, got ", s.repetition_penalty));
  }
  if (!std::isfinite(s.presence_penalty) || !std::isfinite(s.frequency_penalty)) {
    return Bad("presence_penalty and frequency_penalty must be finite");
  }
  if (s.n < 1 || s.n > kMaxChoices) return Bad(absl::StrCat("n must be in [1, ", kMaxChoices, "], got ", s.n));
  if (s.logprobs > kMaxLogprobs) return Bad(absl::StrCat("logprobs must be <= ", kMaxLogprobs, ", got ", s.logprobs));
  if (s.logit_bias.size() > kMaxLogitBias) {
    return Bad(absl::StrCat("logit_bias has ", s.logit_bias.size(), " entries, at most ", kMaxLogitBias));
  }
  for (const auto& [token, bias] : s.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return Bad(absl::StrCat("logit_bias names token ", token, ", vocabulary is ", vocab_size));
    }
    if (!(std::abs(bias) <= kMaxAbsLogitBias)) {
      return Bad(absl::StrCat("logit_bias for token ", token, " is ", bias, ", expected within +-",
                              kMaxAbsLogitBias));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateStopping(const StoppingParams& s, bool has_tokenizer) {
  if (s.max_tokens < 1) return Bad(absl::StrCat("max_tokens must be >= 1, got ", s.max_tokens));
  if (s.min_tokens < 0) return Bad(absl::StrCat("min_tokens must be >= 0, got ", s.min_tokens));
  if (!s.stop_strings.empty() && !has_tokenizer) {
    return absl::FailedPreconditionError("stop strings need a tokenizer, and the engine has none");
  }
  if (s.stop_token_ids.size() > kMaxStopTokenIds) {
    return Bad(absl::StrCat("stop_token_ids has ", s.stop_token_ids.size(), " entries, at most ",
                            kMaxStopTokenIds));
  }
  if (s.stop_strings.size() > kMaxStopStrings) {
    return Bad(absl::StrCat("stop has ", s.stop_strings.size(), " strings, at most ", kMaxStopStrings));
  }
  for (const std::string& stop : s.stop_strings) {
    if (stop.empty()) return Bad("stop strings must not be empty");
    if (stop.size() > kMaxStopStringBytes) {
      return Bad(absl::StrCat("a stop string has ", stop.size(), " bytes, at most ", kMaxStopStringBytes));
    }
  }
  if (s.time_limit < absl::ZeroDuration()) return Bad("time_limit must not be negative");
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRequest(const Request& r, const RequestLimits& limits) {
  if (r.id.empty()) return Bad("request id is empty");
  if (r.prompt.empty()) return Bad("prompt is empty");
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= limits.vocab_size) {
      return Bad(absl::StrCat("prompt token ", i, " has id ", r.prompt[i], ", vocabulary is ",
                              limits.vocab_size));
    }
  }
  if (static_cast<int64_t>(r.prompt.size()) >= limits.max_context) {
    return Bad(absl::StrCat("prompt has ", r.prompt.size(), " tokens, the context holds ",
                            limits.max_context));
  }
  if (absl::Status s = ValidateSampling(r.sampling, limits.vocab_size); !s.ok()) return s;
  return ValidateStopping(r.stopping, limits.has_tokenizer);
}

}  // namespace moe
