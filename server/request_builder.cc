// Request building (see request_builder.h).
#include "server/request_builder.h"

#include "absl/strings/str_cat.h"
#include "runtime/engine/request_validation.h"
#include "server/field_error.h"
#include "runtime/status_macros.h"

namespace moe::server {
namespace {

absl::Status NeedsTokenizer(const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, " needs a tokenizer, and this model has none: send input.token_ids"));
}

// The proto's field names for the engine's validation errors, in RequestField order.
constexpr FieldNameTable kGrpcFieldNames = {
    "input", "sampling.temperature", "sampling.top_k", "sampling.top_p", "sampling.min_p",
    "sampling.repetition_penalty", "sampling.presence_penalty", "sampling.frequency_penalty", "sampling.n",
    "output.top_logprobs", "sampling.logit_bias", "stopping.max_tokens", "stopping.min_tokens",
    "stopping.stop_token_ids", "stopping.stop", "stopping.time_limit_ms", "cache_salt"};

// The proto's defaults where a field is unset; ValidateRequest checks the values.
void FillSampling(const v1::SamplingParams& p, SamplingParams& s) {
  s.temperature = p.has_temperature() ? p.temperature() : 1.0f;
  s.top_k = p.top_k();
  s.top_p = p.has_top_p() ? p.top_p() : 1.0f;
  s.min_p = p.min_p();
  s.repetition_penalty = p.has_repetition_penalty() ? p.repetition_penalty() : 1.0f;
  s.presence_penalty = p.presence_penalty();
  s.frequency_penalty = p.frequency_penalty();
  for (const auto& [token, bias] : p.logit_bias()) s.logit_bias.emplace_back(token, bias);
  if (p.has_seed()) s.seed = p.seed();
  s.n = p.has_n() ? p.n() : 1;
}

void FillStopping(const v1::StoppingParams& p, StoppingParams& s) {
  s.max_tokens = p.has_max_tokens() ? p.max_tokens() : 16;
  s.min_tokens = p.min_tokens();
  s.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  s.stop_strings.assign(p.stop().begin(), p.stop().end());
  s.include_stop_string = p.include_stop_string();
  s.ignore_eos = p.ignore_eos();
  if (p.time_limit_ms() > 0) s.time_limit = absl::Milliseconds(p.time_limit_ms());
}

absl::Status FillOutput(const v1::OutputOptions& p, const ServingModel& serving,
                        BuiltRequest& built) {
  if (p.top_logprobs() < 0) return BadField("output.top_logprobs", absl::StrCat("must be >= 0, got ", p.top_logprobs()));
  if (p.top_logprobs() > 0 && !p.logprobs())
    return BadField("output.top_logprobs", "needs output.logprobs");
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
                        serving, "input.text");
    case v1::GenerateRequest::kTokenIds: {
      if (proto.token_ids().ids().empty()) return BadField("input.token_ids", "is empty");
      RETURN_IF_ERROR(CheckTokenIds(proto.token_ids().ids(), "input.token_ids",
                                    serving.model().info().vocab_size));
      return std::vector<int32_t>(proto.token_ids().ids().begin(), proto.token_ids().ids().end());
    }
    case v1::GenerateRequest::kChat:
      return EncodeChat(proto.chat(), serving);
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;
  }
  return BadField("input", "is missing: set text, token_ids or chat");
}

}  // namespace

absl::Status CheckTokenIds(const google::protobuf::RepeatedField<int32_t>& ids,
                           const std::string& field, int vocab_size) {
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return BadField(absl::StrCat(field, "[", i, "]"),
                 absl::StrCat("= ", ids[i], " is outside the vocabulary (size ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> EncodeChat(const v1::Chat& chat, const ServingModel& serving) {
  if (chat.messages().empty()) return BadField("input.chat.messages", "is empty");
  text::ChatTemplateInputs inputs;
  inputs.add_generation_prompt =
      chat.has_add_generation_prompt() ? chat.add_generation_prompt() : true;
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (m.role().empty()) return BadField(absl::StrCat("input.chat.messages[", i, "].role"), "is empty");
    inputs.messages.push_back({{"role", m.role()}, {"content", m.content()}});
  }
  return EncodeConversation(inputs, serving, "input.chat");
}

absl::StatusOr<BuiltRequest> BuildRequest(const v1::GenerateRequest& proto,
                                          const ServingModel& serving) {
  BuiltRequest built;
  Request& r = built.request;
  r.id = proto.request_id();
  // The salt first: it is cheap to refuse and costly to carry.
  if (static_cast<int>(proto.cache_salt().size()) > kRequestCaps.max_cache_salt_bytes) {
    return BadField("cache_salt", absl::StrCat("has ", proto.cache_salt().size(), " bytes, at most ",
                                          kRequestCaps.max_cache_salt_bytes));
  }
  ASSIGN_OR_RETURN(r.prompt, EncodePrompt(proto, serving));
  FillSampling(proto.sampling(), r.sampling);
  FillStopping(proto.stopping(), r.stopping);
  RETURN_IF_ERROR(FillOutput(proto.output(), serving, built));
  r.priority = proto.priority();
  r.cache_salt = proto.cache_salt();
  const ModelInfo& info = serving.model().info();
  RETURN_IF_ERROR(ValidateRequest(r, {.vocab_size = info.vocab_size,
                                      .max_context = info.max_context,
                                      .has_tokenizer = serving.tokenizer() != nullptr},
                                  NamesFrom(kGrpcFieldNames)));
  return built;
}

}  // namespace moe::server
