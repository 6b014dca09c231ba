// OpenAiCall: one POST /v1/completions or /v1/chat/completions in flight. It submits one
// engine request per prompt, is their output sink (through a small adapter per prompt that
// numbers the choices prompt * n + choice, as OpenAI does), and answers the HTTP exchange in
// OpenAI's shapes: one JSON body when every choice has finished, or server-sent events as
// tokens come (`data: {chunk}\n\n` ... `data: [DONE]\n\n`).
//
// A client that goes away, or that stops reading a stream, has its requests aborted in the
// engine (their KV blocks are freed at the next step).
//
//   OpenAiCall::Start({.engine = &engine, .metrics = &metrics, .id = "chatcmpl-7", ...},
//                     std::move(parsed), exchange);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "runtime/engine/engine.h"
#include "runtime/text/tokenizer.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "server/openai_response.h"

namespace moe::server {

class OpenAiCall : public std::enable_shared_from_this<OpenAiCall> {
 public:
  struct Context {
    Engine* engine;
    Metrics* metrics;
    const text::Tokenizer* tokenizer;  // nullptr: no token strings in logprobs
    std::string id;     // the response's id, "cmpl-7" or "chatcmpl-7"; engine ids derive from it
    std::string model;  // the served model name
    int64_t created;    // Unix seconds
    std::function<void()> on_finish;  // once the answer is complete (or abandoned)
  };

  static void Start(Context context, OpenAiRequest request, std::shared_ptr<HttpExchange> exchange);
  ~OpenAiCall();

  // From the per-prompt sinks, on the engine thread. `choice` is already OpenAI's index.
  void OnDelta(int choice, const OutputDelta& delta);
  void OnFinal(int choice, const FinalOutput& final);

 private:
  OpenAiCall(Context context, OpenAiRequest request, std::shared_ptr<HttpExchange> exchange);
  void Submit();
  void AbortAll() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends one event (a chunk, or null for nothing); a client that is gone or not reading
  // ends the call.
  void SendEvent(const OpenAiResponse::json& event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Answers with `status` (an error event and [DONE] once streaming) and aborts the rest.
  void Fail(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every choice finished: the body, or the stream's usage chunk and [DONE].
  void Complete() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Context context_;
  const OpenAiRequest request_;
  const std::shared_ptr<HttpExchange> exchange_;
  const int n_;  // choices per prompt

  absl::Mutex mu_;  // the engine thread, and the I/O thread of a client that leaves
  OpenAiResponse response_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> engine_ids_ ABSL_GUARDED_BY(mu_);  // submitted requests
  std::vector<absl::Time> last_delta_ ABSL_GUARDED_BY(mu_);   // per choice, for the inter-token metric
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // answered, failed or abandoned: nothing more is sent
  bool streaming_ ABSL_GUARDED_BY(mu_) = false;  // the 200 and the event stream have started
};

}  // namespace moe::server
