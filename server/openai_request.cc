// OpenAI request parsing (see openai_request.h).
#include "server/openai_request.h"

#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/request_validation.h"
#include "runtime/status_macros.h"
#include "server/log.h"
#include "server/prompt_encoding.h"

namespace moe::server {
namespace {

using json = nlohmann::json;

// Fields we read; any other is ignored with a debug line.
const std::set<std::string>& KnownFields(Endpoint endpoint) {
  static const std::set<std::string> common = {
      "model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed",
      "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "user", "top_k", "min_p",
      "repetition_penalty", "min_tokens", "ignore_eos", "stop_token_ids", "priority",
      "skip_special_tokens", "include_stop_str_in_output", "cache_salt"};
  static const std::set<std::string> completions = [] {
    std::set<std::string> s = common;
    s.insert({"prompt", "echo"});
    return s;
  }();
  static const std::set<std::string> chat = [] {
    std::set<std::string> s = common;
    s.insert({"messages", "max_completion_tokens", "top_logprobs"});
    return s;
  }();
  return endpoint == Endpoint::kChat ? chat : completions;
}

const char* TypeName(const json& value) {
  if (value.is_number_integer() || value.is_number_unsigned()) return "an integer";
  return value.type_name();  // "number", "string", "array", ...
}

absl::Status WrongType(const std::string& field, const char* want, const json& got) {
  return BadField(field, absl::StrCat("must be ", want, ", got ", TypeName(got)));
}

// Typed reads of the body's top-level fields. Absent or null leaves the output as it is.
class Fields {
 public:
  explicit Fields(const json& body) : body_(body) {}

  const json* Find(const char* name) const {
    auto it = body_.find(name);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }
  bool Has(const char* name) const { return Find(name) != nullptr; }

  absl::Status Get(const char* name, float* out) const {
    const json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return WrongType(name, "a number", *v);
    *out = v->get<float>();
    return absl::OkStatus();
  }
  absl::Status Get(const char* name, int* out) const {
    const json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    return ToInt(*v, name, out);
  }
  absl::Status Get(const char* name, bool* out) const {
    const json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return WrongType(name, "a boolean", *v);
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  absl::Status Get(const char* name, std::string* out) const {
    const json* v = Find(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return WrongType(name, "a string", *v);
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  static absl::Status ToInt(const json& v, const std::string& name, int* out) {
    if (!v.is_number_integer() && !v.is_number_unsigned()) return WrongType(name, "an integer", v);
    if (v.is_number_unsigned() ? v.get<uint64_t>() > std::numeric_limits<int>::max()
                               : (v.get<int64_t>() > std::numeric_limits<int>::max() ||
                                  v.get<int64_t>() < std::numeric_limits<int>::min())) {
      return BadField(name, absl::StrCat("= ", v.dump(), " is out of range"));
    }
    *out = v.get<int>();
    return absl::OkStatus();
  }

 private:
  const json& body_;
};

absl::StatusOr<std::vector<int32_t>> TokenIds(const json& list, const std::string& field) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < list.size(); ++i) {
    int id = 0;
    RETURN_IF_ERROR(Fields::ToInt(list[i], absl::StrCat(field, "[", i, "]"), &id));
    ids.push_back(id);
  }
  return ids;
}

// Completions: a string, a list of strings, a list of token ids, or a list of such lists.
absl::Status ParsePrompts(const json& prompt, const ServingModel& serving, OpenAiRequest& out,
                          std::vector<std::vector<int32_t>>& prompts) {
  auto add_text = [&](const json& text, const std::string& field) -> absl::Status {
    ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                     EncodeText(text.get<std::string>(), /*add_special_tokens=*/true, serving, field));
    prompts.push_back(std::move(ids));
    out.prompt_texts.push_back(text.get<std::string>());
    return absl::OkStatus();
  };
  auto add_ids = [&](const json& list, const std::string& field) -> absl::Status {
    if (list.empty()) return BadField(field, "is empty");
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, TokenIds(list, field));
    prompts.push_back(std::move(ids));
    out.prompt_texts.emplace_back();  // filled by the caller from the tokenizer, if echoed
    return absl::OkStatus();
  };
  if (prompt.is_string()) return add_text(prompt, "prompt");
  if (!prompt.is_array()) return WrongType("prompt", "a string, a list of strings or of token ids", prompt);
  if (prompt.empty()) return BadField("prompt", "is empty");
  if (prompt[0].is_number()) return add_ids(prompt, "prompt");
  for (size_t i = 0; i < prompt.size(); ++i) {
    const std::string field = absl::StrCat("prompt[", i, "]");
    if (prompt[i].is_string()) {
      RETURN_IF_ERROR(add_text(prompt[i], field));
    } else if (prompt[i].is_array()) {
      RETURN_IF_ERROR(add_ids(prompt[i], field));
    } else {
      return WrongType(field, "a string or a list of token ids", prompt[i]);
    }
  }
  return absl::OkStatus();
}

// A message's content: a string, a list of text parts (joined by newlines), or null.
absl::StatusOr<std::string> MessageContent(const json& content, const std::string& field) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return WrongType(field, "a string or a list of text parts", content);
  std::vector<std::string> texts;
  for (size_t j = 0; j < content.size(); ++j) {
    const std::string part = absl::StrCat(field, "[", j, "]");
    const json& p = content[j];
    if (!p.is_object()) return WrongType(part, "an object", p);
    auto type = p.find("type");
    if (type == p.end() || !type->is_string()) return BadField(part + ".type", "must be a string");
    if (*type != "text") {
      return BadField(part + ".type", absl::StrCat("\"", type->get<std::string>(),
                                                   "\" is not supported: only \"text\" parts are"));
    }
    auto text = p.find("text");
    if (text == p.end() || !text->is_string()) return BadField(part + ".text", "must be a string");
    texts.push_back(text->get<std::string>());
  }
  return absl::StrJoin(texts, "\n");
}

absl::StatusOr<std::vector<int32_t>> ParseMessages(const json& messages, const ServingModel& serving) {
  if (!messages.is_array()) return WrongType("messages", "a list of messages", messages);
  if (messages.empty()) return BadField("messages", "is empty");
  static const std::set<std::string> kRoles = {"system", "developer", "user", "assistant", "tool"};
  text::ChatTemplateInputs inputs;
  inputs.add_generation_prompt = true;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    const json& m = messages[i];
    if (!m.is_object()) return WrongType(field, "an object", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return BadField(field + ".role", "must be a string");
    if (kRoles.count(role->get<std::string>()) == 0) {
      return BadField(field + ".role",
                      absl::StrCat("\"", role->get<std::string>(),
                                   "\" is not a role: use system, developer, user, assistant or tool"));
    }
    auto content = m.find("content");
    if (content == m.end() && *role != "assistant") return BadField(field + ".content", "is missing");
    ASSIGN_OR_RETURN(std::string text,
                     MessageContent(content == m.end() ? json() : *content, field + ".content"));
    nlohmann::ordered_json message = nlohmann::ordered_json::parse(m.dump());
    // Chat templates know "system"; OpenAI's newer "developer" means the same.
    message["role"] = *role == "developer" ? "system" : role->get<std::string>();
    message["content"] = std::move(text);
    inputs.messages.push_back(std::move(message));
  }
  return EncodeConversation(inputs, serving, "messages");
}

absl::Status ParseStop(const json* stop, std::vector<std::string>& out) {
  if (stop == nullptr) return absl::OkStatus();
  if (stop->is_string()) {
    out.push_back(stop->get<std::string>());
    return absl::OkStatus();
  }
  if (!stop->is_array()) return WrongType("stop", "a string or a list of strings", *stop);
  for (size_t i = 0; i < stop->size(); ++i) {
    if (!(*stop)[i].is_string()) return WrongType(absl::StrCat("stop[", i, "]"), "a string", (*stop)[i]);
    out.push_back((*stop)[i].get<std::string>());
  }
  return absl::OkStatus();
}

absl::Status ParseSampling(const Fields& f, SamplingParams& s) {
  RETURN_IF_ERROR(f.Get("temperature", &s.temperature));
  RETURN_IF_ERROR(f.Get("top_p", &s.top_p));
  RETURN_IF_ERROR(f.Get("top_k", &s.top_k));
  if (s.top_k == -1) s.top_k = 0;  // vLLM's spelling of "all tokens"
  RETURN_IF_ERROR(f.Get("min_p", &s.min_p));
  RETURN_IF_ERROR(f.Get("repetition_penalty", &s.repetition_penalty));
  RETURN_IF_ERROR(f.Get("presence_penalty", &s.presence_penalty));
  RETURN_IF_ERROR(f.Get("frequency_penalty", &s.frequency_penalty));
  RETURN_IF_ERROR(f.Get("n", &s.n));
  if (const json* seed = f.Find("seed")) {
    if (!seed->is_number_integer() && !seed->is_number_unsigned()) return WrongType("seed", "an integer", *seed);
    s.seed = seed->is_number_unsigned() ? seed->get<uint64_t>() : static_cast<uint64_t>(seed->get<int64_t>());
  }
  if (const json* bias = f.Find("logit_bias")) {
    if (!bias->is_object()) return WrongType("logit_bias", "an object of token id to bias", *bias);
    for (const auto& [key, value] : bias->items()) {
      const std::string field = absl::StrCat("logit_bias[", key, "]");
      int token = 0;
      size_t used = 0;
      try {
        token = std::stoi(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != key.size()) return BadField(field, "must be keyed by a token id");
      if (!value.is_number()) return WrongType(field, "a number", value);
      s.logit_bias.emplace_back(token, value.get<float>());
    }
  }
  return absl::OkStatus();
}

absl::Status ParseStopping(const Fields& f, Endpoint endpoint, StoppingParams& s, bool* max_tokens_set) {
  *max_tokens_set = f.Has("max_tokens") || f.Has("max_completion_tokens");
  RETURN_IF_ERROR(f.Get("max_tokens", &s.max_tokens));
  if (endpoint == Endpoint::kChat) RETURN_IF_ERROR(f.Get("max_completion_tokens", &s.max_tokens));
  RETURN_IF_ERROR(f.Get("min_tokens", &s.min_tokens));
  RETURN_IF_ERROR(ParseStop(f.Find("stop"), s.stop_strings));
  if (const json* ids = f.Find("stop_token_ids")) {
    if (!ids->is_array()) return WrongType("stop_token_ids", "a list of token ids", *ids);
    ASSIGN_OR_RETURN(s.stop_token_ids, TokenIds(*ids, "stop_token_ids"));
  }
  RETURN_IF_ERROR(f.Get("ignore_eos", &s.ignore_eos));
  RETURN_IF_ERROR(f.Get("include_stop_str_in_output", &s.include_stop_string));
  return absl::OkStatus();
}

// Logprobs: an integer (how many top ones) for completions; a bool plus top_logprobs for chat.
absl::Status ParseLogprobs(const Fields& f, Endpoint endpoint, int* logprobs) {
  if (endpoint == Endpoint::kCompletions) return f.Get("logprobs", logprobs);
  bool wanted = false;
  RETURN_IF_ERROR(f.Get("logprobs", &wanted));
  int top = 0;
  RETURN_IF_ERROR(f.Get("top_logprobs", &top));
  if (f.Has("top_logprobs") && !wanted) return BadField("top_logprobs", "needs logprobs: true");
  *logprobs = wanted ? top : -1;
  return absl::OkStatus();
}

FieldNameTable OpenAiFieldNames(Endpoint endpoint, const Fields& f) {
  const bool chat = endpoint == Endpoint::kChat;
  return {chat ? "messages" : "prompt", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
          "presence_penalty", "frequency_penalty", "n", chat ? "top_logprobs" : "logprobs", "logit_bias",
          chat && f.Has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens", "min_tokens",
          "stop_token_ids", "stop", "time_limit", "cache_salt"};
}

}  // namespace

ApiError ApiErrorOf(const absl::Status& status) {
  ApiError e{.message = std::string(status.message()), .param = FieldOf(status)};
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      e.status = 400;
      break;
    case absl::StatusCode::kUnauthenticated:
      e = {.status = 401, .message = e.message, .type = "authentication_error", .code = "invalid_api_key"};
      break;
    case absl::StatusCode::kNotFound:
      e.status = 404;
      e.code = "not_found";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.status = 429;
      e.type = "rate_limit_error";
      e.code = "queue_full";
      break;
    case absl::StatusCode::kUnavailable:
      e.status = 503;
      e.type = "service_unavailable";
      break;
    case absl::StatusCode::kAlreadyExists:
      e.status = 409;
      break;
    default:
      e.status = 500;
      e.type = "internal_error";
      break;
  }
  return e;
}

std::string ErrorJson(const ApiError& error) {
  nlohmann::ordered_json e = {{"message", error.message}, {"type", error.type}, {"param", nullptr}, {"code", nullptr}};
  if (!error.param.empty()) e["param"] = error.param;
  if (!error.code.empty()) e["code"] = error.code;
  return nlohmann::ordered_json{{"error", std::move(e)}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(Endpoint endpoint, std::string_view body_text,
                                                 const ServingModel& serving) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    return absl::InvalidArgumentError(absl::StrCat("the body is not valid JSON: ", e.what()));
  }
  return ParseOpenAiBody(endpoint, body, serving);
}

absl::StatusOr<OpenAiRequest> ParseOpenAiBody(Endpoint endpoint, const json& body,
                                              const ServingModel& serving) {
  if (!body.is_object()) return absl::InvalidArgumentError("the body must be a JSON object");
  const std::set<std::string>& known = KnownFields(endpoint);
  for (const auto& [key, value] : body.items()) {
    if (known.count(key) == 0) Log(LogLevel::kDebug, absl::StrCat("ignoring unknown field \"", key, "\""));
  }
  const Fields f(body);
  OpenAiRequest out{.endpoint = endpoint};
  if (!f.Has("model")) return BadField("model", "is required");
  RETURN_IF_ERROR(f.Get("model", &out.model));
  RETURN_IF_ERROR(f.Get("stream", &out.stream));
  if (const json* options = f.Find("stream_options")) {
    if (!options->is_object()) return WrongType("stream_options", "an object", *options);
    if (!out.stream) return BadField("stream_options", "is only allowed with stream: true");
    auto usage = options->find("include_usage");
    if (usage != options->end() && !usage->is_null()) {
      if (!usage->is_boolean()) return WrongType("stream_options.include_usage", "a boolean", *usage);
      out.include_usage = usage->get<bool>();
    }
  }
  if (const json* user = f.Find("user"); user != nullptr && !user->is_string()) {
    return WrongType("user", "a string", *user);
  }

  Request r;
  RETURN_IF_ERROR(ParseSampling(f, r.sampling));
  bool max_tokens_set = false;
  RETURN_IF_ERROR(ParseStopping(f, endpoint, r.stopping, &max_tokens_set));
  RETURN_IF_ERROR(ParseLogprobs(f, endpoint, &out.logprobs));
  r.sampling.logprobs = out.logprobs;
  RETURN_IF_ERROR(f.Get("priority", &r.priority));
  RETURN_IF_ERROR(f.Get("skip_special_tokens", &r.skip_special_tokens));
  if (const json* salt = f.Find("cache_salt")) {
    if (!salt->is_string()) return WrongType("cache_salt", "a string", *salt);
    if (static_cast<int>(salt->get_ref<const std::string&>().size()) > kRequestCaps.max_cache_salt_bytes) {
      return BadField("cache_salt", absl::StrCat("has more than ", kRequestCaps.max_cache_salt_bytes, " bytes"));
    }
    r.cache_salt = salt->get<std::string>();
  }

  std::vector<std::vector<int32_t>> prompts;
  if (endpoint == Endpoint::kCompletions) {
    RETURN_IF_ERROR(f.Get("echo", &out.echo));
    if (out.echo && out.logprobs >= 0) {
      return BadField("echo", "with logprobs is not supported (it would need the prompt's logprobs)");
    }
    const json* prompt = f.Find("prompt");
    if (prompt == nullptr) return BadField("prompt", "is required");
    RETURN_IF_ERROR(ParsePrompts(*prompt, serving, out, prompts));
  } else {
    const json* messages = f.Find("messages");
    if (messages == nullptr) return BadField("messages", "is required");
    ASSIGN_OR_RETURN(std::vector<int32_t> ids, ParseMessages(*messages, serving));
    prompts.push_back(std::move(ids));
  }

  const ModelInfo& info = serving.model().info();
  const RequestLimits limits{.vocab_size = info.vocab_size,
                             .max_context = info.max_context,
                             .has_tokenizer = serving.tokenizer() != nullptr};
  const FieldNameTable table = OpenAiFieldNames(endpoint, f);
  std::string named;  // the field the engine's validation complained about, for `param`
  const FieldNames base = NamesFrom(table);
  const FieldNames names = [&](RequestField field, int64_t index) {
    named = base(field, index);
    return named;
  };
  for (size_t i = 0; i < prompts.size(); ++i) {
    Request& p = out.prompts.emplace_back(r);
    p.prompt = std::move(prompts[i]);
    // Chat's default is "as long as the context allows", as OpenAI's is.
    if (endpoint == Endpoint::kChat && !max_tokens_set) {
      const int64_t pool = int64_t{serving.num_kv_blocks()} * serving.block_size();
      p.stopping.max_tokens = static_cast<int>(std::clamp<int64_t>(
          std::min<int64_t>(info.max_context, pool) - static_cast<int64_t>(p.prompt.size()), 1,
          std::numeric_limits<int>::max()));
    }
    if (absl::Status valid = ValidateRequest(p, limits, names); !valid.ok()) return WithField(valid, named);
    if (out.echo && out.prompt_texts[i].empty() && serving.tokenizer() != nullptr) {
      ASSIGN_OR_RETURN(out.prompt_texts[i], serving.tokenizer()->Decode(p.prompt));
    }
  }
  return out;
}

}  // namespace moe::server
