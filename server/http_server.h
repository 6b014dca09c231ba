// HttpServer: moe-server's HTTP/1.1 front end on Boost.Beast over Asio. A fixed pool of I/O
// threads serves every connection (no thread per connection); each connection runs on its
// own strand and carries one exchange (request and response) at a time, keep-alive between.
//
// A handler gets the request as an HttpExchange and answers it whenever it likes, from any
// thread: at once with Reply, or later, or as a stream (StartStream, Send..., EndStream, sent
// with chunked transfer encoding, as server-sent events need). While an exchange is open the
// connection is watched: a client that goes away fires OnClientGone, so the work it asked
// for can be aborted. A stream whose client reads too slowly is bounded: Send refuses once
// `max_pending_bytes` wait unsent, and the caller ends the work.
//
//   ASSIGN_OR_RETURN(auto http, HttpServer::Start({.host = "127.0.0.1", .port = 8000},
//       [](std::shared_ptr<HttpExchange> x) { x->Reply(200, "text/plain", "hello\n"); }));
//   http->port();  http->Stop(absl::Seconds(5));
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/tls_options.h"

namespace moe::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case

  // The first header named `name` (lower case), or "" when there is none.
  std::string_view Header(std::string_view name) const;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// One request on one connection, and the way to answer it. Thread-safe: every call is
// carried out on the connection's strand, in order. Exactly one of Reply or
// StartStream...EndStream answers; calls after the answer (or after the client left) do
// nothing.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual const HttpRequest& request() const = 0;

  virtual void Reply(int status, std::string content_type, std::string body,
                     HttpHeaders headers = {}) = 0;
  virtual void StartStream(int status, std::string content_type, HttpHeaders headers = {}) = 0;
  // Queues `data` as one chunk of the stream. False when the client is gone or is not
  // reading: more than max_pending_bytes wait; the caller should stop and EndStream.
  virtual bool Send(std::string data) = 0;
  virtual void EndStream() = 0;
  // Drops the connection now, with whatever is unsent (a stream whose client stopped reading).
  virtual void Close() = 0;

  // `callback` runs once, on an I/O thread, if the client closes its connection or it breaks
  // before the answer is written; never after. Set it before any answer can be started.
  virtual void OnClientGone(std::function<void()> callback) = 0;
};

using HttpHandler = std::function<void(std::shared_ptr<HttpExchange> exchange)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;       // 0: any free port
  int io_threads = 2;    // serve every connection
  size_t max_body_bytes = 4 << 20;          // larger bodies get 413
  size_t max_pending_bytes = 16 << 20;      // unsent stream bytes before Send refuses
  absl::Duration idle_timeout = absl::Seconds(60);  // for the next request's bytes (and a TLS handshake)
  TlsOptions tls;  // enabled: HTTPS only (a plaintext client's connection is dropped)
};

class HttpServer {
 public:
  // Binds host:port and serves on `io_threads` background threads.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                           HttpHandler handler);
  ~HttpServer();

  int port() const;
  int open_connections() const;
  // Stops accepting and joins the I/O threads. Answers already queued are written out, for
  // up to `flush_timeout` (clients that do not read could hold the exit forever); then every
  // connection left is closed (the clients of exchanges still open are "gone").
  void Stop(absl::Duration flush_timeout = absl::ZeroDuration());

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::server
