// GenerateCall (see generate_call.h).
#include "server/generate_call.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"
#include "server/log.h"

namespace moe::server {
namespace {

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kStopString:
      return v1::FINISH_REASON_STOP_STRING;
    case FinishReason::kStopToken:
      return v1::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kTimeLimit:
      return v1::FINISH_REASON_TIME_LIMIT;
    case FinishReason::kAborted:
      return v1::FINISH_REASON_ABORTED;
    case FinishReason::kError:
      return v1::FINISH_REASON_ERROR;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void ToProto(const TokenLogprob& from, v1::TokenLogprob* to) {
  to->set_token(from.token);
  to->set_logprob(from.logprob);
}

// Appends chunk `from` to chunk `into`; usage is cumulative, so the later one wins.
void Merge(const v1::Chunk& from, v1::Chunk* into) {
  into->mutable_token_ids()->MergeFrom(from.token_ids());
  into->mutable_text()->append(from.text());
  into->mutable_logprobs()->MergeFrom(from.logprobs());
  *into->mutable_usage() = from.usage();
}

// A reactor that finishes at once.
class FailedCall final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  explicit FailedCall(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

GenerateCall::GenerateCall(Context context, const BuiltRequest& built)
    : context_(std::move(context)),
      engine_id_(built.request.id),
      stream_(built.stream),
      prompt_tokens_(static_cast<int>(built.request.prompt.size())),
      completion_tokens_(built.request.sampling.n, 0),
      last_delta_time_(built.request.sampling.n, absl::InfiniteFuture()),
      finals_left_(built.request.sampling.n) {}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateCall::Start(Context context,
                                                                    BuiltRequest built) {
  std::shared_ptr<GenerateCall> call(new GenerateCall(std::move(context), built));
  call->self_ = call;
  const absl::Status submitted = call->context_.engine->Submit(std::move(built.request), call);
  if (submitted.ok() && call->context_.take_early_abort && call->context_.take_early_abort()) {
    call->context_.engine->Abort(call->engine_id_);
  }
  if (!submitted.ok()) {
    call->context_.metrics->OnRejected(CodeName(submitted));
    {
      absl::MutexLock lock(&call->mu_);
      call->finals_left_ = 0;
      call->status_ = ToGrpcStatus(submitted);
    }
    call->Pump();
  }
  return call.get();
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerateCall::Fail(grpc::Status status) {
  return new FailedCall(status);
}

void GenerateCall::OnDelta(const OutputDelta& delta) {
  const int n = static_cast<int>(delta.token_ids.size());
  completion_tokens_[delta.choice] += n;
  const absl::Time now = absl::Now();
  const absl::Time last = std::exchange(last_delta_time_[delta.choice], now);
  context_.metrics->OnTokens(
      n, last == absl::InfiniteFuture() ? -1.0 : absl::ToDoubleSeconds(now - last));

  v1::GenerateResponse response;
  response.set_choice(delta.choice);
  v1::Chunk* chunk = response.mutable_chunk();
  if (stream_.token_ids)
    chunk->mutable_token_ids()->Add(delta.token_ids.begin(), delta.token_ids.end());
  if (stream_.text) chunk->set_text(delta.text);
  for (const SampledLogprobs& lp : delta.logprobs) {
    v1::TokenLogprobs* out = chunk->add_logprobs();
    ToProto(lp.chosen, out->mutable_chosen());
    for (const TokenLogprob& top : lp.top) ToProto(top, out->add_top());
  }
  if (chunk->token_ids().empty() && chunk->text().empty() && chunk->logprobs().empty()) return;
  chunk->mutable_usage()->set_prompt_tokens(prompt_tokens_);
  chunk->mutable_usage()->set_completion_tokens(completion_tokens_[delta.choice]);
  Enqueue(std::move(response));
}

void GenerateCall::OnFinal(const FinalOutput& final) {
  context_.metrics->OnFinished(final, /*count_prompt=*/final.choice == 0);
  v1::GenerateResponse response;
  response.set_choice(final.choice);
  v1::Final* out = response.mutable_final();
  out->set_reason(ToProto(final.reason));
  out->set_matched_stop(final.matched_stop);
  out->mutable_usage()->set_prompt_tokens(final.usage.prompt_tokens);
  out->mutable_usage()->set_completion_tokens(final.usage.completion_tokens);
  out->mutable_usage()->set_cached_tokens(final.usage.cached_tokens);
  out->mutable_timings()->set_queue_s(absl::ToDoubleSeconds(final.timings.queue));
  out->mutable_timings()->set_time_to_first_token_s(
      absl::ToDoubleSeconds(final.timings.time_to_first_token));
  out->mutable_timings()->set_end_to_end_s(absl::ToDoubleSeconds(final.timings.end_to_end));
  out->mutable_confidence()->set_tokens(final.confidence.tokens);
  out->mutable_confidence()->set_mean_logprob(final.confidence.mean_logprob);
  out->mutable_confidence()->set_min_logprob(final.confidence.min_logprob);
  if (final.reason == FinishReason::kError) {
    out->set_error(std::string(final.error.message()));
    Log(LogLevel::kError,
        absl::StrCat("request ", context_.request_id, " failed: ", final.error.ToString()));
  }
  if (final.reason == FinishReason::kError) {
    absl::MutexLock lock(&mu_);
    // An engine failure is INTERNAL; a group that lost a rank says UNAVAILABLE (retry later).
    status_ = absl::IsUnavailable(final.error) ? ToGrpcStatus(final.error)
                                               : grpc::Status(grpc::StatusCode::INTERNAL, std::string(final.error.message()));
  }
  Enqueue(std::move(response));
}

void GenerateCall::Enqueue(v1::GenerateResponse response) {
  bool overflowed = false;
  {
    absl::MutexLock lock(&mu_);
    // Counted in the same critical section as the push, so Pump can never see "no Final
    // left to come" while this one is still on its way into the queue.
    if (response.has_final()) --finals_left_;
    if (cancelled_ || finished_) return;  // nobody to read it
    // Merge into the newest queued chunk of this choice (choices interleave when n > 1) while
    // it stays well below the message limit. pending_bytes_ is the queue's exact size.
    const size_t merge_limit = std::min(kMaxMergedChunkBytes, context_.max_message_bytes / 2);
    for (auto it = pending_.rbegin(); response.has_chunk() && it != pending_.rend(); ++it) {
      if (it->choice() != response.choice()) continue;
      const size_t before = it->ByteSizeLong();
      if (it->has_chunk() && before + response.ByteSizeLong() < merge_limit) {
        Merge(response.chunk(), it->mutable_chunk());
        pending_bytes_ += it->ByteSizeLong() - before;
        response.Clear();
      }
      break;
    }
    if (response.has_chunk() || response.has_final()) {
      response.set_request_id(context_.request_id);
      pending_bytes_ += response.ByteSizeLong();
      pending_.push_back(std::move(response));
    }
    // A client that stops reading must not make the server buffer without bound.
    // Streams that fall this far behind are ended (RESOURCE_EXHAUSTED) and their request aborted.
    if (pending_bytes_ > context_.max_pending_bytes) {
      overflowed = cancelled_ = true;
      status_ = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                             absl::StrCat("the client is not reading its stream: ", pending_bytes_,
                                          " bytes buffered"));
    }
  }
  if (overflowed) AbortInEngine();
  Pump();
}

void GenerateCall::Pump() {
  enum class Next { kWait, kWrite, kFinish } next = Next::kWait;
  grpc::Status finish_with;
  {
    absl::MutexLock lock(&mu_);
    if (writing_ || finished_) return;
    if (cancelled_) {
      next = Next::kFinish;
      finish_with = status_.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED
                        ? status_
                        : grpc::Status(grpc::StatusCode::CANCELLED, "the request was cancelled");
    } else if (!pending_.empty()) {
      next = Next::kWrite;
      in_flight_ = std::move(pending_.front());
      pending_.pop_front();
      const size_t sent = std::min(pending_bytes_, in_flight_.ByteSizeLong());
      pending_bytes_ = pending_.empty() ? 0 : pending_bytes_ - sent;
      writing_ = true;
    } else if (finals_left_ == 0) {
      next = Next::kFinish;
      finish_with = status_;
    }
    if (next == Next::kFinish) finished_ = true;
  }
  if (next == Next::kWrite) StartWrite(&in_flight_);
  if (next == Next::kFinish) {
    if (context_.on_finish) context_.on_finish();  // before the client can see the end
    Finish(finish_with);
  }
}

void GenerateCall::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) cancelled_ = true;  // the stream broke: the client is gone
  }
  if (!ok) AbortInEngine();
  Pump();
}

void GenerateCall::OnCancel() {
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }
  AbortInEngine();
  Pump();
}

void GenerateCall::AbortInEngine() {
  bool running;
  {
    absl::MutexLock lock(&mu_);
    running = finals_left_ > 0;
  }
  if (running) context_.engine->Abort(engine_id_);
}

void GenerateCall::OnDone() {
  self_.reset();  // the engine may still hold the sink until its final; then it goes too
}

}  // namespace moe::server
