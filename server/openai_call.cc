// OpenAiCall (see openai_call.h).
#include "server/openai_call.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/log.h"

namespace moe::server {
namespace {

// Compact, with invalid UTF-8 replaced rather than thrown on.
std::string Dump(const OpenAiResponse::json& j) {
  return j.dump(-1, ' ', false, OpenAiResponse::json::error_handler_t::replace);
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
      response_(request_, {.id = context_.id,
                           .model = context_.model,
                           .created = context_.created,
                           .tokenizer = context_.tokenizer}),
      last_delta_(response_.num_choices(), absl::InfiniteFuture()) {}

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
  for (const OpenAiResponse::json& chunk : response_.OpeningChunks()) SendEvent(chunk);
}

void OpenAiCall::AbortAll() {
  for (const std::string& id : engine_ids_) context_.engine->Abort(id);
}

void OpenAiCall::OnDelta(int index, const OutputDelta& delta) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  const absl::Time last = std::exchange(last_delta_[index], now);
  context_.metrics->OnTokens(static_cast<int>(delta.token_ids.size()),
                             last == absl::InfiniteFuture() ? -1.0 : absl::ToDoubleSeconds(now - last));
  if (done_) return;
  SendEvent(response_.AddDelta(index, delta));
}

void OpenAiCall::OnFinal(int index, const FinalOutput& final) {
  context_.metrics->OnFinished(final, /*count_prompt=*/index % n_ == 0);
  absl::MutexLock lock(&mu_);
  const OpenAiResponse::json last = response_.AddFinal(index, final);
  if (done_) return;
  if (final.reason == FinishReason::kError || final.reason == FinishReason::kAborted) {
    // An abort carries no error of its own (its status is OK): what the client is told is logged.
    const absl::Status status = final.reason == FinishReason::kAborted
                                    ? absl::UnavailableError("the request was aborted: the server is stopping")
                                : absl::IsUnavailable(final.error) ? final.error
                                                                   : absl::InternalError(final.error.message());
    Log(LogLevel::kError, absl::StrCat(context_.id, " failed: ", status.ToString()));
    Fail(status);
    return;
  }
  SendEvent(last);
  if (response_.finished() && !done_) Complete();
}

void OpenAiCall::SendEvent(const OpenAiResponse::json& event) {
  if (done_ || event.is_null()) return;
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
    const std::string usage =
        request_.include_usage ? absl::StrCat("data: ", Dump(response_.UsageChunk()), "\n\n") : "";
    exchange_->Send(absl::StrCat(usage, "data: [DONE]\n\n"));
    exchange_->EndStream();
  } else {
    exchange_->Reply(200, "application/json", Dump(response_.Body()));
  }
  if (context_.on_finish) context_.on_finish();
}

}  // namespace moe::server
