// HttpEndpoint (see http_endpoint.h).
#include "server/http_endpoint.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace moe::server {

HttpEndpoint::HttpEndpoint() : server_(std::make_unique<httplib::Server>()) {}

HttpEndpoint::~HttpEndpoint() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& host, int port,
                                                                  Handlers handlers) {
  std::unique_ptr<HttpEndpoint> http(new HttpEndpoint());
  http->handlers_ = std::move(handlers);
  httplib::Server& server = *http->server_;
  // Scrapes and probes are rare but must not wait on each other: a connection serves one
  // request, and a client that sends or reads slowly is dropped after 2 s, so idle
  // keep-alive scrapers or slow connections cannot hold the threads a health probe needs.
  server.new_task_queue = [] { return new httplib::ThreadPool(8); };
  server.set_keep_alive_max_count(1);
  server.set_read_timeout(2, 0);
  server.set_write_timeout(2, 0);
  server.set_payload_max_length(1 << 16);
  server.Get("/metrics", [h = http.get()](const httplib::Request&, httplib::Response& res) {
    res.set_content(h->handlers_.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });
  server.Get("/health", [h = http.get()](const httplib::Request&, httplib::Response& res) {
    const auto [serving, state] = h->handlers_.health();
    res.status = serving ? 200 : 503;
    res.set_content(absl::StrCat(state, "\n"), "text/plain");
  });
  // Other methods on these paths are refused as such (405 with Allow), not as bad requests.
  const auto method_not_allowed = [](const httplib::Request& req, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "GET, HEAD");
    res.set_content(absl::StrCat(req.method, " is not allowed on ", req.path, ": use GET\n"), "text/plain");
  };
  for (const char* path : {"/metrics", "/health"}) {
    server.Post(path, method_not_allowed);
    server.Put(path, method_not_allowed);
    server.Patch(path, method_not_allowed);
    server.Delete(path, method_not_allowed);
  }
  http->port_ =
      port == 0 ? server.bind_to_any_port(host) : (server.bind_to_port(host, port) ? port : -1);
  if (http->port_ < 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", host, ":", port));
  }
  http->thread_ = std::thread([&server] { server.listen_after_bind(); });
  // stop() is a no-op until the listener runs: wait for it, so an early Stop() cannot leave
  // the thread blocked in accept() forever.
  for (int i = 0; i < 5000 && !server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return http;
}

void HttpEndpoint::Stop() {
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

}  // namespace moe::server
