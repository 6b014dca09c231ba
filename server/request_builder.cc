// Request building (see request_builder.h).
#include "server/request_builder.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/engine/request_validation.h"
#include "runtime/status_macros.h"

namespace moe::server {
namespace {

absl::Status Bad(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", what));
}

absl::Status NeedsTokenizer(const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, " needs a tokenizer, and this model has none: send input.token_ids"));
}

absl::Status CheckFinite(float value, const std::string& field) {
  if (!std::isfinite(value)) return Bad(field, absl::StrCat("must be finite, got ", value));
  return absl::OkStatus();
}

absl::Status FillSampling(const v1::SamplingParams& p, int vocab_size, SamplingParams& s) {
  s.temperature = p.has_temperature() ? p.temperature() : 1.0f;
  if (!(s.temperature >= 0) || !std::isfinite(s.temperature)) {
    return Bad("sampling.temperature", absl::StrCat("must be >= 0, got ", s.temperature));
  }
  s.top_k = p.top_k();
  if (s.top_k < 0) return Bad("sampling.top_k", absl::StrCat("must be >= 0, got ", s.top_k));
  s.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  if (!(s.top_p > 0 && s.top_p <= 1)) {
    return Bad("sampling.top_p", absl::StrCat("must be in (0, 1], got ", s.top_p));
  }
  s.min_p = p.min_p();
  if (!(s.min_p >= 0 && s.min_p <= 1)) {
    return Bad("sampling.min_p", absl::StrCat("must be in [0, 1], got ", s.min_p));
  }
  s.repetition_penalty = p.has_repetition_penalty() ? p.repetition_penalty() : 1.0f;
  if (!(s.repetition_penalty > 0) || !std::isfinite(s.repetition_penalty)) {
    return Bad("sampling.repetition_penalty",
               absl::StrCat("must be > 0, got ", s.repetition_penalty));
  }
  s.presence_penalty = p.presence_penalty();
  RETURN_IF_ERROR(CheckFinite(s.presence_penalty, "sampling.presence_penalty"));
  s.frequency_penalty = p.frequency_penalty();
  RETURN_IF_ERROR(CheckFinite(s.frequency_penalty, "sampling.frequency_penalty"));
  if (p.logit_bias_size() > kMaxLogitBias) {
    return Bad("sampling.logit_bias",
               absl::StrCat("has ", p.logit_bias_size(), " entries, at most ", kMaxLogitBias));
  }
  for (const auto& [token, bias] : p.logit_bias()) {
    const std::string field = absl::StrCat("sampling.logit_bias[", token, "]");
    if (token < 0 || token >= vocab_size) {
      return Bad(field,
                 absl::StrCat("names a token outside the vocabulary (size ", vocab_size, ")"));
    }
    if (!(std::abs(bias) <= kMaxAbsLogitBias)) {
      return Bad(field, absl::StrCat("= ", bias, ", expected within +-", kMaxAbsLogitBias));
    }
    s.logit_bias.emplace_back(token, bias);
  }
  if (p.has_seed()) s.seed = p.seed();
  s.n = p.has_n() ? p.n() : 1;
  if (s.n < 1 || s.n > kMaxChoices) {
    return Bad("sampling.n", absl::StrCat("must be in [1, ", kMaxChoices, "], got ", s.n));
  }
  return absl::OkStatus();
}

absl::Status FillStopping(const v1::StoppingParams& p, const ServingModel& serving,
                          StoppingParams& s) {
  s.max_tokens = p.has_max_tokens() ? p.max_tokens() : 16;
  if (s.max_tokens < 1)
    return Bad("stopping.max_tokens", absl::StrCat("must be >= 1, got ", s.max_tokens));
  s.min_tokens = p.min_tokens();
  if (s.min_tokens < 0 || s.min_tokens > s.max_tokens) {
    return Bad("stopping.min_tokens",
               absl::StrCat("must be in [0, max_tokens = ", s.max_tokens, "], got ", s.min_tokens));
  }
  const int vocab_size = serving.model().info().vocab_size;
  for (int i = 0; i < p.stop_token_ids_size(); ++i) {
    const int32_t id = p.stop_token_ids(i);
    if (id < 0 || id >= vocab_size) {
      return Bad(absl::StrCat("stopping.stop_token_ids[", i, "]"),
                 absl::StrCat("= ", id, " is outside the vocabulary (size ", vocab_size, ")"));
    }
    s.stop_token_ids.push_back(id);
  }
  if (p.stop_size() > kMaxStopStrings) {
    return Bad("stopping.stop",
               absl::StrCat("has ", p.stop_size(), " strings, at most ", kMaxStopStrings));
  }
  if (p.stop_size() > 0 && serving.tokenizer() == nullptr) return NeedsTokenizer("stopping.stop");
  for (int i = 0; i < p.stop_size(); ++i) {
    const std::string& stop = p.stop(i);
    if (stop.empty() || stop.size() > kMaxStopStringBytes) {
      return Bad(absl::StrCat("stopping.stop[", i, "]"),
                 absl::StrCat("must have 1 to ", kMaxStopStringBytes, " bytes, has ", stop.size()));
    }
    s.stop_strings.push_back(stop);
  }
  s.include_stop_string = p.include_stop_string();
  s.ignore_eos = p.ignore_eos();
  if (p.time_limit_ms() > 0) s.time_limit = absl::Milliseconds(p.time_limit_ms());
  return absl::OkStatus();
}

absl::Status FillOutput(const v1::OutputOptions& p, const ServingModel& serving,
                        BuiltRequest& built) {
  if (p.top_logprobs() < 0 || p.top_logprobs() > kMaxLogprobs) {
    return Bad("output.top_logprobs",
               absl::StrCat("must be in [0, ", kMaxLogprobs, "], got ", p.top_logprobs()));
  }
  if (p.top_logprobs() > 0 && !p.logprobs())
    return Bad("output.top_logprobs", "needs output.logprobs");
  built.request.sampling.logprobs = p.logprobs() ? p.top_logprobs() : -1;
  built.request.skip_special_tokens = p.has_skip_special_tokens() ? p.skip_special_tokens() : true;
  const bool has_tokenizer = serving.tokenizer() != nullptr;
  if (p.has_return_text() && p.return_text() && !has_tokenizer)
    return NeedsTokenizer("output.return_text");
  built.stream.text = p.has_return_text() ? p.return_text() : has_tokenizer;
  built.stream.token_ids = p.has_return_token_ids() ? p.return_token_ids() : true;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> EncodePrompt(const v1::GenerateRequest& proto,
                                                  const ServingModel& serving) {
  switch (proto.input_case()) {
    case v1::GenerateRequest::kText:
      return EncodeText(proto.text(),
                        proto.has_add_special_tokens() ? proto.add_special_tokens() : true,
                        serving);
    case v1::GenerateRequest::kTokenIds: {
      if (proto.token_ids().ids().empty()) return Bad("input.token_ids", "is empty");
      RETURN_IF_ERROR(CheckTokenIds(proto.token_ids().ids(), "input.token_ids",
                                    serving.model().info().vocab_size));
      return std::vector<int32_t>(proto.token_ids().ids().begin(), proto.token_ids().ids().end());
    }
    case v1::GenerateRequest::kChat:
      return EncodeChat(proto.chat(), serving);
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;
  }
  return Bad("input", "is missing: set text, token_ids or chat");
}

}  // namespace

absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                           const std::string& field, int vocab_size) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Bad(absl::StrCat(field, "[", i, "]"),
                 absl::StrCat("= ", ids[i], " is outside the vocabulary (size ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> EncodeText(const std::string& text, bool add_special_tokens,
                                                const ServingModel& serving) {
  if (serving.tokenizer() == nullptr) return NeedsTokenizer("input.text");
  if (text.empty()) return Bad("input.text", "is empty");
  absl::StatusOr<std::vector<int32_t>> ids =
      serving.tokenizer()->Encode(text, {.add_special_tokens = add_special_tokens});
  if (!ids.ok()) return Bad("input.text", std::string(ids.status().message()));
  if (ids->empty()) return Bad("input.text", "encodes to no tokens");
  const int vocab_size = serving.model().info().vocab_size;
  for (int32_t id : *ids) {
    if (id >= vocab_size) {
      return Bad("input.text",
                 absl::StrCat("encodes to id ", id, ", past the model's vocabulary (size ",
                              vocab_size, ")"));
    }
  }
  return ids;
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const v1::Chat& chat, const ServingModel& serving) {
  if (serving.tokenizer() == nullptr) return NeedsTokenizer("input.chat");
  if (serving.chat_template() == nullptr) {
    return absl::FailedPreconditionError(
        "input.chat needs a chat template, and this model has none");
  }
  if (chat.messages().empty()) return Bad("input.chat.messages", "is empty");
  text::ChatTemplateInputs inputs;
  inputs.add_generation_prompt =
      chat.has_add_generation_prompt() ? chat.add_generation_prompt() : true;
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (m.role().empty()) return Bad(absl::StrCat("input.chat.messages[", i, "].role"), "is empty");
    inputs.messages.push_back({{"role", m.role()}, {"content", m.content()}});
  }
  absl::StatusOr<std::string> rendered = serving.chat_template()->Render(inputs);
  if (!rendered.ok()) return Bad("input.chat", std::string(rendered.status().message()));
  // The template writes the special tokens itself.
  return EncodeText(*rendered, /*add_special_tokens=*/false, serving);
}

absl::StatusOr<BuiltRequest> BuildRequest(const v1::GenerateRequest& proto,
                                          const ServingModel& serving) {
  BuiltRequest built;
  Request& r = built.request;
  r.id = proto.request_id();
  if (proto.cache_salt().size() > kMaxCacheSaltBytes) {
    return Bad("cache_salt", absl::StrCat("has ", proto.cache_salt().size(), " bytes, at most ",
                                          kMaxCacheSaltBytes));
  }
  ASSIGN_OR_RETURN(r.prompt, EncodePrompt(proto, serving));
  const ModelInfo& info = serving.model().info();
  if (static_cast<int>(r.prompt.size()) >= info.max_context) {
    return Bad("input", absl::StrCat("has ", r.prompt.size(), " tokens; the context holds ",
                                     info.max_context, " with room for at least one new token"));
  }
  RETURN_IF_ERROR(FillSampling(proto.sampling(), info.vocab_size, r.sampling));
  RETURN_IF_ERROR(FillStopping(proto.stopping(), serving, r.stopping));
  RETURN_IF_ERROR(FillOutput(proto.output(), serving, built));
  r.priority = proto.priority();
  r.cache_salt = proto.cache_salt();
  return built;
}

}  // namespace moe::server
