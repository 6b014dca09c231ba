// OpenAiCall (see openai_call.h).
#include "server/openai_call.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/log.h"

namespace moe::server {
namespace {

using json = nlohmann::ordered_json;  // fields in the order OpenAI documents them

// Dumps as the wire needs it: compact, invalid UTF-8 replaced rather than thrown on.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// JSON has no -inf: OpenAI reports impossible tokens as -9999.
double Finite(float logprob) { return std::isfinite(logprob) ? logprob : -9999.0; }

const char* FinishReasonOf(FinishReason reason) {
  return reason == FinishReason::kLength || reason == FinishReason::kTimeLimit ? "length" : "stop";
}

json ConfidenceJson(const Confidence& c) {
  return {{"tokens", c.tokens}, {"mean_logprob", c.mean_logprob}, {"min_logprob", Finite(c.min_logprob)}};
}

// Forwards one engine request's output to its call, numbering its choices after the
// previous prompts' (prompt * n + choice).
class PromptSink final : public OutputSink {
 public:
  PromptSink(std::shared_ptr<OpenAiCall> call, int first_choice)
      : call_(std::move(call)), first_choice_(first_choice) {}
  void OnDelta(const OutputDelta& delta) override { call_->OnDelta(first_choice_ + delta.choice, delta); }
  void OnFinal(const FinalOutput& final) override { call_->OnFinal(first_choice_ + final.choice, final); }

 private:
  const std::shared_ptr<OpenAiCall> call_;
  const int first_choice_;
};

}  // namespace

OpenAiCall::OpenAiCall(Context context, OpenAiRequest request, std::shared_ptr<HttpExchange> exchange)
    : context_(std::move(context)),
      request_(std::move(request)),
      exchange_(std::move(exchange)),
      n_(request_.prompts.empty() ? 1 : request_.prompts[0].sampling.n),
      choices_(request_.prompts.size() * n_),
      unfinished_(static_cast<int>(choices_.size())) {
  for (Choice& c : choices_) {
    if (request_.logprobs >= 0) c.logprobs = json();
  }
}

OpenAiCall::~OpenAiCall() {
  bool notify;
  {
    absl::MutexLock lock(&mu_);
    notify = !done_;  // every request refused, or the engine dropped them: the answer is over
  }
  if (notify && context_.on_finish) context_.on_finish();
}

void OpenAiCall::Start(Context context, OpenAiRequest request, std::shared_ptr<HttpExchange> exchange) {
  std::shared_ptr<OpenAiCall> call(new OpenAiCall(std::move(context), std::move(request), exchange));
  exchange->OnClientGone([weak = std::weak_ptr<OpenAiCall>(call)] {
    std::shared_ptr<OpenAiCall> c = weak.lock();
    if (c == nullptr) return;
    {
      absl::MutexLock lock(&c->mu_);
      if (c->done_) return;
      c->done_ = true;
      c->AbortAll();
    }
    Log(LogLevel::kDebug, absl::StrCat(c->context_.id, ": the client went away; aborting"));
    if (c->context_.on_finish) c->context_.on_finish();
  });
  call->Submit();
}

void OpenAiCall::Submit() {
  // Held while submitting: the engine may answer at once, and must find the stream started.
  absl::MutexLock lock(&mu_);
  for (size_t p = 0; p < request_.prompts.size(); ++p) {
    Request r = request_.prompts[p];
    r.id = absl::StrCat(context_.id, "-", p);
    engine_ids_.push_back(r.id);
    const absl::Status submitted =
        context_.engine->Submit(std::move(r), std::make_shared<PromptSink>(shared_from_this(), p * n_));
    if (!submitted.ok()) {
      engine_ids_.pop_back();
      context_.metrics->OnRejected(absl::StatusCodeToString(submitted.code()));
      Fail(submitted);
      return;
    }
  }
  if (!request_.stream) return;
  exchange_->StartStream(200, "text/event-stream");
  streaming_ = true;
  // Chat streams open each choice with the assistant's role; echoed completions with the prompt.
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (request_.endpoint == Endpoint::kChat) {
      SendEvent(ChunkJson(json::array(
          {{{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr},
            {"finish_reason", nullptr}}})));
    } else if (request_.echo) {
      SendEvent(ChunkJson(json::array({{{"index", i}, {"text", request_.prompt_texts[i / n_]},
                                        {"logprobs", nullptr}, {"finish_reason", nullptr}}})));
    }
  }
}

void OpenAiCall::AbortAll() {
  for (const std::string& id : engine_ids_) context_.engine->Abort(id);
}

void OpenAiCall::AddLogprobs(Choice& choice, const OutputDelta& delta, json& into) {
  auto token_text = [&](int32_t id) {
    if (context_.tokenizer == nullptr) return absl::StrCat("token_id:", id);
    absl::StatusOr<std::string> text = context_.tokenizer->Decode({id});
    return text.ok() ? *text : absl::StrCat("token_id:", id);
  };
  auto bytes_of = [](const std::string& s) {
    json bytes = json::array();
    for (unsigned char ch : s) bytes.push_back(ch);
    return bytes;
  };
  if (request_.endpoint == Endpoint::kChat) {
    if (into.is_null()) into = {{"content", json::array()}, {"refusal", nullptr}};
    for (const SampledLogprobs& lp : delta.logprobs) {
      const std::string token = token_text(lp.chosen.token);
      json top = json::array();
      for (const TokenLogprob& t : lp.top) {
        const std::string s = token_text(t.token);
        top.push_back({{"token", s}, {"logprob", Finite(t.logprob)}, {"bytes", bytes_of(s)}});
      }
      into["content"].push_back({{"token", token}, {"logprob", Finite(lp.chosen.logprob)},
                                 {"bytes", bytes_of(token)}, {"top_logprobs", std::move(top)}});
    }
    return;
  }
  if (into.is_null()) {
    into = {{"tokens", json::array()}, {"token_logprobs", json::array()},
            {"top_logprobs", json::array()}, {"text_offset", json::array()}};
  }
  for (const SampledLogprobs& lp : delta.logprobs) {
    const std::string token = token_text(lp.chosen.token);
    json top = json::object();
    for (const TokenLogprob& t : lp.top) top[token_text(t.token)] = Finite(t.logprob);
    into["tokens"].push_back(token);
    into["token_logprobs"].push_back(Finite(lp.chosen.logprob));
    into["top_logprobs"].push_back(std::move(top));
    into["text_offset"].push_back(choice.text_offset);
    choice.text_offset += static_cast<int64_t>(token.size());
  }
}

void OpenAiCall::OnDelta(int index, const OutputDelta& delta) {
  absl::MutexLock lock(&mu_);
  Choice& choice = choices_[index];
  const absl::Time now = absl::Now();
  const absl::Time last = std::exchange(choice.last_delta, now);
  context_.metrics->OnTokens(static_cast<int>(delta.token_ids.size()),
                             last == absl::InfiniteFuture() ? -1.0 : absl::ToDoubleSeconds(now - last));
  if (done_) return;
  if (!request_.stream) {
    choice.text += delta.text;
    if (request_.logprobs >= 0) AddLogprobs(choice, delta, choice.logprobs);
    return;
  }
  json logprobs;
  if (request_.logprobs >= 0 && !delta.logprobs.empty()) AddLogprobs(choice, delta, logprobs);
  if (delta.text.empty() && logprobs.is_null()) return;  // text held back near a stop string
  json c = {{"index", index}};
  if (request_.endpoint == Endpoint::kChat) {
    c["delta"] = {{"content", delta.text}};
  } else {
    c["text"] = delta.text;
  }
  c["logprobs"] = std::move(logprobs);
  c["finish_reason"] = nullptr;
  SendEvent(ChunkJson(json::array({std::move(c)})));
}

void OpenAiCall::OnFinal(int index, const FinalOutput& final) {
  context_.metrics->OnFinished(final, /*count_prompt=*/index % n_ == 0);
  absl::MutexLock lock(&mu_);
  Choice& choice = choices_[index];
  choice.final = final;
  choice.finished = true;
  --unfinished_;
  if (done_) return;
  if (final.reason == FinishReason::kError || final.reason == FinishReason::kAborted) {
    Log(LogLevel::kError, absl::StrCat(context_.id, " failed: ", final.error.ToString()));
    Fail(final.reason == FinishReason::kAborted
             ? absl::UnavailableError("the request was aborted: the server is stopping")
         : absl::IsUnavailable(final.error) ? final.error
                                            : absl::InternalError(final.error.message()));
    return;
  }
  if (request_.stream) {
    json c = {{"index", index}};
    if (request_.endpoint == Endpoint::kChat) {
      c["delta"] = json::object();
    } else {
      c["text"] = "";
    }
    c["logprobs"] = nullptr;
    c["finish_reason"] = FinishReasonOf(final.reason);
    c["confidence"] = ConfidenceJson(final.confidence);
    SendEvent(ChunkJson(json::array({std::move(c)})));
  }
  if (unfinished_ == 0 && !done_) Complete();
}

json OpenAiCall::UsageJson() const {
  int prompt = 0, completion = 0, cached = 0;
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Usage& u = choices_[i].final.usage;
    completion += u.completion_tokens;
    if (i % n_ == 0) prompt += u.prompt_tokens, cached += u.cached_tokens;
  }
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

json OpenAiCall::ChunkJson(json choices) const {
  json chunk = {{"id", context_.id},
                {"object", request_.endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
                {"created", context_.created},
                {"model", context_.model},
                {"choices", std::move(choices)}};
  if (request_.include_usage) chunk["usage"] = nullptr;
  return chunk;
}

json OpenAiCall::ChoiceJson(int index, const Choice& choice) const {
  json c = {{"index", index}};
  if (request_.endpoint == Endpoint::kChat) {
    c["message"] = {{"role", "assistant"}, {"content", choice.text}, {"refusal", nullptr}};
  } else {
    c["text"] = request_.echo ? request_.prompt_texts[index / n_] + choice.text : choice.text;
  }
  c["logprobs"] = choice.logprobs;
  c["finish_reason"] = FinishReasonOf(choice.final.reason);
  c["confidence"] = ConfidenceJson(choice.final.confidence);
  return c;
}

void OpenAiCall::SendEvent(const json& event) {
  if (done_) return;
  if (exchange_->Send(absl::StrCat("data: ", Dump(event), "\n\n"))) return;
  // The client is gone or has stopped reading: end its work and its connection.
  done_ = true;
  Log(LogLevel::kWarning, absl::StrCat(context_.id, ": the client is not reading its stream; aborting"));
  AbortAll();
  exchange_->Close();
  if (context_.on_finish) context_.on_finish();
}

void OpenAiCall::Fail(const absl::Status& status) {
  done_ = true;
  AbortAll();
  const ApiError error = ApiErrorOf(status);
  if (streaming_) {
    // The stream has started: an error event, then the end.
    exchange_->Send(absl::StrCat("data: ", ErrorJson(error), "\n\ndata: [DONE]\n\n"));
    exchange_->EndStream();
  } else {
    exchange_->Reply(error.status, "application/json", ErrorJson(error));
  }
  if (context_.on_finish) context_.on_finish();
}

void OpenAiCall::Complete() {
  done_ = true;
  if (request_.stream) {
    std::string tail;
    if (request_.include_usage) {
      json usage = ChunkJson(json::array());
      usage["usage"] = UsageJson();
      tail = absl::StrCat("data: ", Dump(usage), "\n\n");
    }
    exchange_->Send(absl::StrCat(tail, "data: [DONE]\n\n"));
    exchange_->EndStream();
  } else {
    json body = {{"id", context_.id},
                 {"object", request_.endpoint == Endpoint::kChat ? "chat.completion" : "text_completion"},
                 {"created", context_.created},
                 {"model", context_.model},
                 {"choices", json::array()}};
    for (size_t i = 0; i < choices_.size(); ++i) body["choices"].push_back(ChoiceJson(i, choices_[i]));
    body["usage"] = UsageJson();
    exchange_->Reply(200, "application/json", Dump(body));
  }
  if (context_.on_finish) context_.on_finish();
}

}  // namespace moe::server
