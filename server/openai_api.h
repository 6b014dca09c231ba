// OpenAiApi: moe-server's HTTP API, served by HttpServer: OpenAI's GET /v1/models,
// POST /v1/completions and POST /v1/chat/completions on the same engine as gRPC, plus the
// operator's GET /health (200 while serving, else 503) and GET /metrics (Prometheus).
//
// With an API key, /v1 needs `Authorization: Bearer <key>` (compared in constant time);
// /health and /metrics stay open. Errors are OpenAI's {"error": {...}} with 400 (naming the
// field), 401, 404 (unknown model or path), 405, 413, 429 (queue full) and 503 (loading or
// draining).
//
//   OpenAiApi api({.model_name = "qwen3", .api_key = key}, service, metrics, render_metrics);
//   ASSIGN_OR_RETURN(auto http, HttpServer::Start({.port = 8000},
//                                                 [&](auto x) { api.Handle(std::move(x)); }));
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/api_key.h"
#include "server/generation_service.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/openai_request.h"

namespace moe::server {

struct OpenAiApiOptions {
  std::string model_name;  // what /v1/models lists and requests must name
  std::string api_key;     // empty: no authentication
};

class OpenAiApi {
 public:
  // `service` owns the server's state (loading, serving, draining) and the serving model.
  OpenAiApi(OpenAiApiOptions options, GenerationService& service, Metrics& metrics,
            std::function<std::string()> render_metrics);

  void Handle(std::shared_ptr<HttpExchange> exchange);

  // Completions and chat completions not yet answered.
  int active_requests() const;
  // Waits until none is; false if some still are after `timeout`.
  bool WaitForRequests(absl::Duration timeout);

 private:
  void Generate(Endpoint endpoint, const std::shared_ptr<HttpExchange>& exchange);
  void ListModels(const std::shared_ptr<HttpExchange>& exchange, const std::string& id);
  ApiError UnknownModel(const std::string& name) const;  // 404 naming the served model

  const OpenAiApiOptions options_;
  const ApiKey api_key_;
  GenerationService& service_;
  Metrics& metrics_;
  const std::function<std::string()> render_metrics_;
  const int64_t created_;  // Unix seconds of the start, the model's "created"
  const std::string id_prefix_;  // random per process, so ids do not repeat across restarts
  std::atomic<uint64_t> next_id_{0};

  mutable absl::Mutex mu_;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moe::server
