// HttpEndpoint: the operator's HTTP port: GET /metrics (Prometheus text format) and GET
// /health (200 when serving, else 503; the body names the state, e.g. "STATE_SERVING").
// Other methods on them get 405 with an Allow header.
// Served by cpp-httplib on its own small thread pool; the bodies come from callbacks.
//
//   ASSIGN_OR_RETURN(auto http, HttpEndpoint::Start("127.0.0.1", 9400, {
//       .metrics = [&] { return metrics.Render(...); },
//       .health = [&] { return std::make_pair(true, std::string("STATE_SERVING")); }}));
//   http->port();  http->Stop();
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace moe::server {

class HttpEndpoint {
 public:
  struct Handlers {
    std::function<std::string()> metrics;
    std::function<std::pair<bool, std::string>()> health;  // (serving, state name)
  };

  // Binds host:port (0: any free port) and serves on a background thread.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& host, int port,
                                                             Handlers handlers);
  ~HttpEndpoint();

  int port() const { return port_; }
  void Stop();

 private:
  HttpEndpoint();

  std::unique_ptr<httplib::Server> server_;
  Handlers handlers_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace moe::server
