#include "runtime/engine/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

// Checks against kRequestCaps and the limits, naming each field as `names` spells it.
class Validator {
 public:
  Validator(const RequestLimits& limits, const FieldNames& names) : limits_(limits), names_(names) {}

  absl::Status Prompt(const std::vector<int32_t>& prompt) const {
    if (prompt.empty()) return Bad(RequestField::kPrompt, -1, "is empty");
    for (size_t i = 0; i < prompt.size(); ++i) {
      if (prompt[i] < 0 || prompt[i] >= limits_.vocab_size) {
        return Bad(RequestField::kPrompt, i, absl::StrCat("= ", prompt[i], " is outside the vocabulary (size ",
                                                          limits_.vocab_size, ")"));
      }
    }
    if (static_cast<int64_t>(prompt.size()) >= limits_.max_context) {
      return Bad(RequestField::kPrompt, -1, absl::StrCat("has ", prompt.size(), " tokens; the context holds ",
                                                         limits_.max_context, " with room for at least one new token"));
    }
    return absl::OkStatus();
  }

  absl::Status Sampling(const SamplingParams& s) const {
    const RequestCaps& caps = kRequestCaps;
    if (!(s.temperature >= 0 && std::isfinite(s.temperature))) {
      return Bad(RequestField::kTemperature, -1, absl::StrCat("must be finite and >= 0, got ", s.temperature));
    }
    if (s.top_k < 0) return Bad(RequestField::kTopK, -1, absl::StrCat("must be >= 0, got ", s.top_k));
    if (!(s.top_p > 0 && s.top_p <= 1)) {
      return Bad(RequestField::kTopP, -1, absl::StrCat("must be in (0, 1], got ", s.top_p));
    }
    if (!(s.min_p >= 0 && s.min_p <= 1)) {
      return Bad(RequestField::kMinP, -1, absl::StrCat("must be in [0, 1], got ", s.min_p));
    }
    if (!(s.repetition_penalty > 0 && std::isfinite(s.repetition_penalty))) {
      return Bad(RequestField::kRepetitionPenalty, -1,
                 absl::StrCat("must be finite and > 0, got ", s.repetition_penalty));
    }
    if (!std::isfinite(s.presence_penalty)) {
      return Bad(RequestField::kPresencePenalty, -1, absl::StrCat("must be finite, got ", s.presence_penalty));
    }
    if (!std::isfinite(s.frequency_penalty)) {
      return Bad(RequestField::kFrequencyPenalty, -1, absl::StrCat("must be finite, got ", s.frequency_penalty));
    }
    if (s.n < 1 || s.n > caps.max_choices) {
      return Bad(RequestField::kN, -1, absl::StrCat("must be in [1, ", caps.max_choices, "], got ", s.n));
    }
    if (s.logprobs < -1 || s.logprobs > caps.max_logprobs) {
      return Bad(RequestField::kLogprobs, -1, absl::StrCat("must be in [0, ", caps.max_logprobs, "], got ", s.logprobs));
    }
    if (static_cast<int>(s.logit_bias.size()) > caps.max_logit_bias) {
      return Bad(RequestField::kLogitBias, -1,
                 absl::StrCat("has ", s.logit_bias.size(), " entries, at most ", caps.max_logit_bias));
    }
    for (const auto& [token, bias] : s.logit_bias) {
      if (token < 0 || token >= limits_.vocab_size) {
        return Bad(RequestField::kLogitBias, token,
                   absl::StrCat("names a token outside the vocabulary (size ", limits_.vocab_size, ")"));
      }
      if (!(std::abs(bias) <= caps.max_abs_logit_bias)) {
        return Bad(RequestField::kLogitBias, token, absl::StrCat("= ", bias, ", expected within +-", caps.max_abs_logit_bias));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Stopping(const StoppingParams& s) const {
    const RequestCaps& caps = kRequestCaps;
    if (s.max_tokens < 1) return Bad(RequestField::kMaxTokens, -1, absl::StrCat("must be >= 1, got ", s.max_tokens));
    if (s.min_tokens < 0 || s.min_tokens > s.max_tokens) {
      return Bad(RequestField::kMinTokens, -1,
                 absl::StrCat("must be in [0, max_tokens = ", s.max_tokens, "], got ", s.min_tokens));
    }
    if (static_cast<int>(s.stop_token_ids.size()) > caps.max_stop_token_ids) {
      return Bad(RequestField::kStopTokenIds, -1,
                 absl::StrCat("has ", s.stop_token_ids.size(), " entries, at most ", caps.max_stop_token_ids));
    }
    for (size_t i = 0; i < s.stop_token_ids.size(); ++i) {
      if (s.stop_token_ids[i] < 0 || s.stop_token_ids[i] >= limits_.vocab_size) {
        return Bad(RequestField::kStopTokenIds, i, absl::StrCat("= ", s.stop_token_ids[i],
                                                                " is outside the vocabulary (size ", limits_.vocab_size, ")"));
      }
    }
    if (static_cast<int>(s.stop_strings.size()) > caps.max_stop_strings) {
      return Bad(RequestField::kStop, -1,
                 absl::StrCat("has ", s.stop_strings.size(), " strings, at most ", caps.max_stop_strings));
    }
    if (!s.stop_strings.empty() && !limits_.has_tokenizer) {
      return absl::FailedPreconditionError(
          absl::StrCat(names_(RequestField::kStop, -1), " needs a tokenizer, and this model has none"));
    }
    for (size_t i = 0; i < s.stop_strings.size(); ++i) {
      const size_t bytes = s.stop_strings[i].size();
      if (bytes == 0 || static_cast<int>(bytes) > caps.max_stop_string_bytes) {
        return Bad(RequestField::kStop, i, absl::StrCat("must have 1 to ", caps.max_stop_string_bytes, " bytes, has ", bytes));
      }
    }
    if (s.time_limit < absl::ZeroDuration()) return Bad(RequestField::kTimeLimit, -1, "must not be negative");
    return absl::OkStatus();
  }

  absl::Status CacheSalt(const std::string& salt) const {
    if (static_cast<int>(salt.size()) > kRequestCaps.max_cache_salt_bytes) {
      return Bad(RequestField::kCacheSalt, -1,
                 absl::StrCat("has ", salt.size(), " bytes, at most ", kRequestCaps.max_cache_salt_bytes));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status Bad(RequestField field, int64_t index, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(names_(field, index), " ", what));
  }

  const RequestLimits& limits_;
  const FieldNames& names_;
};

}  // namespace

FieldNames NamesFrom(const FieldNameTable& table) {
  return [&table](RequestField field, int64_t index) {
    const char* name = table[static_cast<int>(field)];
    return index < 0 ? std::string(name) : absl::StrCat(name, "[", index, "]");
  };
}

std::string EngineFieldName(RequestField field, int64_t index) {
  static constexpr FieldNameTable kEngineNames = {
      "prompt", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
      "frequency_penalty", "n", "logprobs", "logit_bias", "max_tokens", "min_tokens", "stop_token_ids",
      "stop", "time_limit", "cache_salt"};
  static const FieldNames kNames = NamesFrom(kEngineNames);
  return kNames(field, index);
}

absl::Status ValidateRequest(const Request& r, const RequestLimits& limits, const FieldNames& names) {
  const Validator check(limits, names);
  if (absl::Status s = check.Prompt(r.prompt); !s.ok()) return s;
  if (absl::Status s = check.Sampling(r.sampling); !s.ok()) return s;
  if (absl::Status s = check.Stopping(r.stopping); !s.ok()) return s;
  return check.CacheSalt(r.cache_salt);
}

}  // namespace moe
