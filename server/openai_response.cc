// OpenAiResponse (see openai_response.h).
#include "server/openai_response.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"

namespace moe::server {
namespace {

using json = OpenAiResponse::json;

// JSON has no -inf: OpenAI reports impossible tokens as -9999.
double Finite(float logprob) { return std::isfinite(logprob) ? logprob : -9999.0; }

json ConfidenceJson(const Confidence& c) {
  return {{"tokens", c.tokens}, {"mean_logprob", c.mean_logprob}, {"min_logprob", Finite(c.min_logprob)}};
}

json Bytes(const std::string& s) {
  json bytes = json::array();
  for (unsigned char ch : s) bytes.push_back(ch);
  return bytes;
}

}  // namespace

const char* OpenAiFinishReason(FinishReason reason) {
  return reason == FinishReason::kLength || reason == FinishReason::kTimeLimit ? "length" : "stop";
}

OpenAiResponse::OpenAiResponse(const OpenAiRequest& request, OpenAiResponseOptions options)
    : request_(request),
      options_(std::move(options)),
      n_(request.prompts.empty() ? 1 : request.prompts[0].sampling.n),
      choices_(request.prompts.size() * n_),
      unfinished_(static_cast<int>(choices_.size())) {}

std::string OpenAiResponse::TokenText(int32_t id) const {
  if (options_.tokenizer != nullptr) {
    absl::StatusOr<std::string> text = options_.tokenizer->Decode({id});
    if (text.ok()) return *text;
  }
  return absl::StrCat("token_id:", id);
}

void OpenAiResponse::AddLogprobs(Choice& choice, const OutputDelta& delta, json& into) const {
  if (request_.endpoint == Endpoint::kChat) {
    if (into.is_null()) into = {{"content", json::array()}, {"refusal", nullptr}};
    for (const SampledLogprobs& lp : delta.logprobs) {
      const std::string token = TokenText(lp.chosen.token);
      json top = json::array();
      for (const TokenLogprob& t : lp.top) {
        const std::string s = TokenText(t.token);
        top.push_back({{"token", s}, {"logprob", Finite(t.logprob)}, {"bytes", Bytes(s)}});
      }
      into["content"].push_back({{"token", token}, {"logprob", Finite(lp.chosen.logprob)},
                                 {"bytes", Bytes(token)}, {"top_logprobs", std::move(top)}});
    }
    return;
  }
  if (into.is_null()) {
    into = {{"tokens", json::array()}, {"token_logprobs", json::array()},
            {"top_logprobs", json::array()}, {"text_offset", json::array()}};
  }
  for (const SampledLogprobs& lp : delta.logprobs) {
    const std::string token = TokenText(lp.chosen.token);
    json top = json::object();
    for (const TokenLogprob& t : lp.top) top[TokenText(t.token)] = Finite(t.logprob);
    into["tokens"].push_back(token);
    into["token_logprobs"].push_back(Finite(lp.chosen.logprob));
    into["top_logprobs"].push_back(std::move(top));
    into["text_offset"].push_back(choice.text_offset);
    choice.text_offset += static_cast<int64_t>(token.size());
  }
}

json OpenAiResponse::Chunk(json choices) const {
  json chunk = {{"id", options_.id},
                {"object", request_.endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
                {"created", options_.created},
                {"model", options_.model},
                {"choices", std::move(choices)}};
  if (request_.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

std::vector<json> OpenAiResponse::OpeningChunks() const {
  std::vector<json> chunks;
  for (int i = 0; i < num_choices(); ++i) {
    if (request_.endpoint == Endpoint::kChat) {
      chunks.push_back(Chunk(json::array({{{"index", i},
                                           {"delta", {{"role", "assistant"}, {"content", ""}}},
                                           {"logprobs", nullptr},
                                           {"finish_reason", nullptr}}})));
    } else if (request_.echo) {
      chunks.push_back(Chunk(json::array({{{"index", i},
                                           {"text", request_.prompt_texts[i / n_]},
                                           {"logprobs", nullptr},
                                           {"finish_reason", nullptr}}})));
    }
  }
  return chunks;
}

json OpenAiResponse::AddDelta(int index, const OutputDelta& delta) {
  Choice& choice = choices_[index];
  const bool wants_logprobs = request_.logprobs >= 0;
  if (!request_.stream) {
    choice.text += delta.text;
    if (wants_logprobs) AddLogprobs(choice, delta, choice.logprobs);
    return nullptr;
  }
  json logprobs;
  if (wants_logprobs && !delta.logprobs.empty()) AddLogprobs(choice, delta, logprobs);
  if (delta.text.empty() && logprobs.is_null()) return nullptr;
  json c = {{"index", index}};
  if (request_.endpoint == Endpoint::kChat) {
    c["delta"] = {{"content", delta.text}};
  } else {
    c["text"] = delta.text;
  }
  c["logprobs"] = std::move(logprobs);
  c["finish_reason"] = nullptr;
  return Chunk(json::array({std::move(c)}));
}

json OpenAiResponse::AddFinal(int index, const FinalOutput& final) {
  choices_[index].final = final;
  --unfinished_;
  if (!request_.stream) return nullptr;
  json c = {{"index", index}};
  if (request_.endpoint == Endpoint::kChat) {
    c["delta"] = json::object();
  } else {
    c["text"] = "";
  }
  c["logprobs"] = nullptr;
  c["finish_reason"] = OpenAiFinishReason(final.reason);
  c["confidence"] = ConfidenceJson(final.confidence);
  return Chunk(json::array({std::move(c)}));
}

json OpenAiResponse::Usage() const {
  int prompt = 0, completion = 0, cached = 0;
  for (int i = 0; i < num_choices(); ++i) {
    const moe::Usage& u = choices_[i].final.usage;
    completion += u.completion_tokens;
    if (i % n_ == 0) prompt += u.prompt_tokens, cached += u.cached_tokens;  // once per prompt
  }
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json OpenAiResponse::UsageChunk() const {
  json chunk = Chunk(json::array());
  chunk["usage"] = Usage();
  return chunk;
}

json OpenAiResponse::Body() const {
  const bool chat = request_.endpoint == Endpoint::kChat;
  json body = {{"id", options_.id},
               {"object", chat ? "chat.completion" : "text_completion"},
               {"created", options_.created},
               {"model", options_.model},
               {"choices", json::array()}};
  for (int i = 0; i < num_choices(); ++i) {
    const Choice& choice = choices_[i];
    json c = {{"index", i}};
    if (chat) {
      c["message"] = {{"role", "assistant"}, {"content", choice.text}, {"refusal", nullptr}};
    } else {
      c["text"] = request_.echo ? request_.prompt_texts[i / n_] + choice.text : choice.text;
    }
    c["logprobs"] = choice.logprobs;
    c["finish_reason"] = OpenAiFinishReason(choice.final.reason);
    c["confidence"] = ConfidenceJson(choice.final.confidence);
    body["choices"].push_back(std::move(c));
  }
  body["usage"] = Usage();
  return body;
}

}  // namespace moe::server
