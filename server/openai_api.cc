// OpenAiApi (see openai_api.h).
#include "server/openai_api.h"

#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "server/log.h"
#include "server/openai_call.h"
#include "server/openai_request.h"

namespace moe::server {
namespace {

using json = nlohmann::ordered_json;

void ReplyError(HttpExchange& exchange, const ApiError& error, HttpHeaders headers = {}) {
  exchange.Reply(error.status, "application/json", ErrorJson(error), std::move(headers));
}

std::string RandomPrefix() {
  std::random_device device;
  return absl::StrFormat("%08x", device());
}

}  // namespace

OpenAiApi::OpenAiApi(OpenAiApiOptions options, GenerationService& service, Metrics& metrics,
                     std::function<std::string()> render_metrics)
    : options_(std::move(options)),
      api_key_(options_.api_key),
      service_(service),
      metrics_(metrics),
      render_metrics_(std::move(render_metrics)),
      created_(absl::ToUnixSeconds(absl::Now())),
      id_prefix_(RandomPrefix()) {}

int OpenAiApi::active_requests() const {
  absl::MutexLock lock(&mu_);
  return active_;
}

bool OpenAiApi::WaitForRequests(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return active_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&none), timeout);
}


void OpenAiApi::Handle(std::shared_ptr<HttpExchange> exchange) {
  const HttpRequest& request = exchange->request();
  const std::string& path = request.path;
  auto only = [&](const char* method) {
    if (request.method == method || (std::string_view(method) == "GET" && request.method == "HEAD")) return true;
    ReplyError(*exchange,
               {.status = 405, .message = absl::StrCat(request.method, " is not allowed on ", path, ": use ", method)},
               {{"Allow", std::string_view(method) == "GET" ? "GET, HEAD" : method}});
    return false;
  };
  if (path == "/health") {
    if (!only("GET")) return;
    const v1::ServerInfo::State state = service_.state();
    exchange->Reply(state == v1::ServerInfo::STATE_SERVING ? 200 : 503, "text/plain",
                    absl::StrCat(v1::ServerInfo::State_Name(state), "\n"));
    return;
  }
  if (path == "/metrics") {
    if (!only("GET")) return;
    exchange->Reply(200, "text/plain; version=0.0.4; charset=utf-8", render_metrics_());
    return;
  }
  const bool v1 = path == "/v1" || absl::StartsWith(path, "/v1/");
  if (v1 && !api_key_.Accepts(request.Header("authorization"))) {
    ReplyError(*exchange, ApiErrorOf(absl::UnauthenticatedError(
                              "a valid API key is needed: send the header Authorization: Bearer <key>")),
               {{"WWW-Authenticate", "Bearer"}});
    return;
  }
  if (path == "/v1/models") {
    if (only("GET")) ListModels(exchange, "");
  } else if (absl::StartsWith(path, "/v1/models/")) {
    if (only("GET")) ListModels(exchange, path.substr(std::string_view("/v1/models/").size()));
  } else if (path == "/v1/completions") {
    if (only("POST")) Generate(Endpoint::kCompletions, exchange);
  } else if (path == "/v1/chat/completions") {
    if (only("POST")) Generate(Endpoint::kChat, exchange);
  } else {
    ReplyError(*exchange, {.status = 404,
                           .message = absl::StrCat("no such path: ", request.method, " ", path),
                           .code = "not_found"});
  }
}

ApiError OpenAiApi::UnknownModel(const std::string& name) const {
  return {.status = 404,
          .message = absl::StrCat("the model \"", name, "\" does not exist: this server serves \"",
                                  options_.model_name, "\""),
          .param = "model",
          .code = "model_not_found"};
}

void OpenAiApi::ListModels(const std::shared_ptr<HttpExchange>& exchange, const std::string& id) {
  const json model = {{"id", options_.model_name}, {"object", "model"}, {"created", created_},
                      {"owned_by", "moe-serve"}};
  if (id.empty()) {
    exchange->Reply(200, "application/json", json{{"object", "list"}, {"data", {model}}}.dump());
  } else if (id == options_.model_name) {
    exchange->Reply(200, "application/json", model.dump());
  } else {
    ReplyError(*exchange, UnknownModel(id));
  }
}

void OpenAiApi::Generate(Endpoint endpoint, const std::shared_ptr<HttpExchange>& exchange) {
  const v1::ServerInfo::State state = service_.state();
  ServingModel* serving = service_.serving();
  if (state != v1::ServerInfo::STATE_SERVING || serving == nullptr) {
    metrics_.OnRejected("UNAVAILABLE");
    ReplyError(*exchange, ApiErrorOf(absl::UnavailableError(
                              state == v1::ServerInfo::STATE_LOADING
                                  ? "the model is still loading; retry later"
                                  : "the server is draining and takes no new requests")),
               {{"Retry-After", "1"}});
    return;
  }
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, exchange->request().body, *serving);
  if (!parsed.ok()) {
    metrics_.OnRejected(absl::StatusCodeToString(parsed.status().code()));
    Log(LogLevel::kDebug, absl::StrCat(exchange->request().path, " refused: ", parsed.status().ToString()));
    ReplyError(*exchange, ApiErrorOf(parsed.status()));
    return;
  }
  if (parsed->model != options_.model_name) {
    metrics_.OnRejected("NOT_FOUND");
    ReplyError(*exchange, UnknownModel(parsed->model));
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    ++active_;
  }
  const uint64_t number = next_id_.fetch_add(1);
  OpenAiCall::Start({.engine = &serving->engine(),
                     .metrics = &metrics_,
                     .tokenizer = serving->tokenizer(),
                     .id = absl::StrCat(endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-", id_prefix_, number),
                     .model = options_.model_name,
                     .created = absl::ToUnixSeconds(absl::Now()),
                     .on_finish =
                         [this] {
                           absl::MutexLock lock(&mu_);
                           --active_;
                         }},
                    *std::move(parsed), exchange);
}

}  // namespace moe::server
