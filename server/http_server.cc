// HttpServer (see http_server.h).
#include "server/http_server.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <deque>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <type_traits>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "runtime/status_macros.h"
#include "server/log.h"
#include "server/tls_context.h"

namespace moe::server {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

// Bytes of a following request read ahead while watching an open exchange; a client that
// pipelines more than this is no longer watched until its exchange ends.
constexpr size_t kMaxReadAhead = 64 << 10;
constexpr size_t kMaxHeaderBytes = 64 << 10;
// Queued chunks merged into one write stop growing past this.
constexpr size_t kMaxCoalescedBytes = 256 << 10;

// What the connection writes: bytes as they are (a serialized header or whole response),
// one chunk of a chunked body, or the last chunk.
struct Output {
  enum class Kind { kRaw, kChunk, kLastChunk } kind;
  std::string data;
};

template <class Body>
std::string Serialize(const http::response<Body>& response) {
  std::ostringstream out;
  out << response;
  return std::move(out).str();
}

class Connection;

// What the server and its connections share. A connection, and so an exchange that a
// handler still holds, may outlive the HttpServer: it keeps this alive, the io_context its
// socket is registered with included.
struct ServerState {
  HttpServerOptions options;
  HttpHandler handler;
  net::io_context io{1};
  std::optional<net::ssl::context> tls;  // with TlsOptions enabled

  absl::Mutex mu;
  std::set<std::weak_ptr<Connection>, std::owner_less<std::weak_ptr<Connection>>> connections
      ABSL_GUARDED_BY(mu);
  int open ABSL_GUARDED_BY(mu) = 0;  // connections not yet closed
  bool stopping ABSL_GUARDED_BY(mu) = false;

  void Closed() {
    absl::MutexLock lock(&mu);
    --open;
  }
};

// One client's connection, plain or TLS (StreamConnection below); what an Exchange and the
// server ask of it. Everything but executor() runs on its strand.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  virtual ~Connection() = default;
  virtual net::any_io_executor executor() = 0;
  virtual void Start() = 0;
  // The server is stopping. The answer being written is finished, then the connection closes
  // instead of reading another request; an idle one closes now.
  virtual void Finish() = 0;
  // Queues output of `exchange`; `last` ends its answer.
  virtual void Write(const std::shared_ptr<class Exchange>& exchange, Output output, bool last) = 0;
  virtual void Close() = 0;
};

class Exchange final : public HttpExchange, public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<Connection> connection, HttpRequest request, unsigned version,
           bool keep_alive, size_t max_pending)
      : connection_(std::move(connection)),
        request_(std::move(request)),
        version_(version),
        keep_alive_(keep_alive),
        max_pending_(max_pending) {}

  const HttpRequest& request() const override { return request_; }
  void Reply(int status, std::string content_type, std::string body, HttpHeaders headers) override;
  void StartStream(int status, std::string content_type, HttpHeaders headers) override;
  bool Send(std::string data) override;
  void EndStream() override;
  void Close() override;
  void OnClientGone(std::function<void()> callback) override {
    absl::MutexLock lock(&mu_);
    on_gone_ = std::move(callback);
  }

  // Strand only.
  void ClientGone() {
    std::function<void()> callback;
    {
      absl::MutexLock lock(&mu_);
      if (ended_) return;
      gone_ = ended_ = true;
      callback = std::move(on_gone_);
    }
    if (callback) callback();
  }
  void Written(size_t bytes) { pending_.fetch_sub(bytes); }
  bool keep_alive() const { return keep_alive_; }

 private:
  // Claims the right to write the answer's start (once) or its end (once).
  bool Claim(bool* flag) {
    absl::MutexLock lock(&mu_);
    if (gone_ || *flag) return false;
    *flag = true;
    return true;
  }
  void Post(Output output, bool last);
  http::response<http::empty_body> Header(int status, const std::string& content_type,
                                          const HttpHeaders& headers) const;

  const std::shared_ptr<Connection> connection_;
  const HttpRequest request_;
  const unsigned version_;
  const bool keep_alive_;
  const size_t max_pending_;
  std::atomic<size_t> pending_{0};

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;  // the answer's end is queued, or the client left
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_gone_ ABSL_GUARDED_BY(mu_);
};

// A Connection over `Stream`: beast::tcp_stream, or beast::ssl_stream over one (TLS: the
// handshake comes first, under the idle timeout).
template <class Stream>
class StreamConnection final : public Connection {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  // `stream_args` make the stream; `state` counts the connection open until it closes.
  template <class... StreamArgs>
  explicit StreamConnection(std::shared_ptr<ServerState> state, StreamArgs&&... stream_args)
      : state_(std::move(state)), stream_(std::forward<StreamArgs>(stream_args)...) {}
  ~StreamConnection() override { Close(); }

  net::any_io_executor executor() override { return stream_.get_executor(); }

  void Start() override {
    if constexpr (kTls) {
      tcp().expires_after(std::chrono::milliseconds(absl::ToInt64Milliseconds(state_->options.idle_timeout)));
      stream_.async_handshake(net::ssl::stream_base::server, [self = Self()](beast::error_code ec) {
        if (ec) {  // not TLS, or a certificate refused: nothing to answer in
          Log(LogLevel::kDebug, absl::StrCat("HTTP TLS handshake failed: ", ec.message()));
          self->Close();
          return;
        }
        self->ReadRequest();
      });
    } else {
      ReadRequest();
    }
  }

  void Finish() override {
    finishing_ = true;
    if (exchange_ == nullptr && queue_.empty()) Close();
  }

  void Write(const std::shared_ptr<Exchange>& exchange, Output output, bool last) override {
    if (closed_ || exchange != exchange_) return;
    queue_.push_back({exchange, std::move(output), last});
    if (!writing_) WriteNext();
  }

  void Close() override {
    if (closed_) return;
    closed_ = true;
    if (exchange_ != nullptr) std::exchange(exchange_, nullptr)->ClientGone();
    beast::error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp().close();
    queue_.clear();
    state_->Closed();
  }

 private:
  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }
  std::shared_ptr<StreamConnection> Self() { return std::static_pointer_cast<StreamConnection>(shared_from_this()); }

  struct Queued {
    std::shared_ptr<Exchange> exchange;
    Output output;
    bool last;
  };

  void ReadRequest() {
    parser_.emplace();
    parser_->body_limit(state_->options.max_body_bytes);
    parser_->header_limit(kMaxHeaderBytes);
    tcp().expires_after(std::chrono::milliseconds(absl::ToInt64Milliseconds(state_->options.idle_timeout)));
    reading_ = true;
    http::async_read(stream_, buffer_, *parser_,
                     [self = Self()](beast::error_code ec, size_t) { self->OnRequest(ec); });
  }

  void OnRequest(beast::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec == http::error::body_limit) {
      RefuseAndClose(http::status::payload_too_large,
                     absl::StrCat("the request body is larger than ", state_->options.max_body_bytes, " bytes"));
      return;
    }
    if (ec) {  // the client closed, timed out idle, or sent what is not HTTP
      if (ec != http::error::end_of_stream && ec != beast::error::timeout && ec != net::error::eof &&
          ec != net::error::connection_reset) {
        RefuseAndClose(http::status::bad_request, absl::StrCat("malformed HTTP request: ", ec.message()));
        return;
      }
      Close();
      return;
    }
    tcp().expires_never();
    http::request<http::string_body> message = parser_->release();
    HttpRequest request;
    request.method = std::string(message.method_string());
    const std::string_view target(message.target().data(), message.target().size());
    request.path = std::string(target.substr(0, target.find('?')));
    for (const auto& field : message) {
      request.headers.emplace_back(
          absl::AsciiStrToLower(std::string(field.name_string().data(), field.name_string().size())),
          std::string(field.value()));
    }
    request.body = std::move(message.body());
    exchange_ = std::make_shared<Exchange>(shared_from_this(), std::move(request), message.version(),
                                           message.keep_alive(), state_->options.max_pending_bytes);
    state_->handler(exchange_);
    Watch();
  }

  // While an exchange is open: read ahead, so a client that closes is noticed at once.
  void Watch() {
    if (reading_ || closed_ || exchange_ == nullptr || buffer_.size() >= kMaxReadAhead) return;
    reading_ = true;
    stream_.async_read_some(buffer_.prepare(4096), [self = Self()](beast::error_code ec, size_t n) {
      self->reading_ = false;
      if (self->closed_) return;
      if (ec) {
        self->Close();  // tells the open exchange its client is gone
        return;
      }
      self->buffer_.commit(n);
      if (self->exchange_ != nullptr) {
        self->Watch();
      } else {
        self->ReadRequest();
      }
    });
  }

  void WriteNext() {
    if (queue_.empty() || closed_) {
      writing_ = false;
      return;
    }
    writing_ = true;
    // A stream that falls behind sends what waits in one chunk (events concatenated are
    // still events), not one write each. (Erasing inside a deque moves its elements: index.)
    while (queue_[0].output.kind == Output::Kind::kChunk && queue_.size() > 1 &&
           queue_[1].output.kind == Output::Kind::kChunk && queue_[1].exchange == queue_[0].exchange &&
           queue_[0].output.data.size() < kMaxCoalescedBytes) {
      queue_[0].output.data += queue_[1].output.data;
      queue_.erase(queue_.begin() + 1);
    }
    Queued& next = queue_.front();
    auto done = [self = Self()](beast::error_code ec, size_t) { self->OnWritten(ec); };
    const Output& out = next.output;
    switch (out.kind) {
      case Output::Kind::kRaw:
        net::async_write(stream_, net::buffer(out.data), std::move(done));
        break;
      case Output::Kind::kChunk:
        net::async_write(stream_, http::make_chunk(net::buffer(out.data)), std::move(done));
        break;
      case Output::Kind::kLastChunk:
        net::async_write(stream_, http::make_chunk_last(), std::move(done));
        break;
    }
  }

  void OnWritten(beast::error_code ec) {
    if (closed_) return;
    if (ec) {
      Close();
      return;
    }
    Queued done = std::move(queue_.front());
    queue_.pop_front();
    done.exchange->Written(done.output.data.size());
    if (done.last && done.exchange == exchange_) {
      exchange_.reset();
      if (!done.exchange->keep_alive() || finishing_) {
        Close();
        return;
      }
      if (!reading_) ReadRequest();
    }
    WriteNext();
  }

  // Answers what could not be read as a request, then closes.
  void RefuseAndClose(http::status status, const std::string& message) {
    http::response<http::string_body> response{status, 11};
    response.set(http::field::content_type, "application/json");
    response.set(http::field::connection, "close");
    response.body() = absl::StrCat(R"({"error": {"message": ")", message,
                                   R"(", "type": "invalid_request_error", "param": null, "code": null}})");
    response.prepare_payload();
    auto data = std::make_shared<std::string>(Serialize(response));
    net::async_write(stream_, net::buffer(*data), [self = Self(), data](beast::error_code ec, size_t) {
      if (ec) {
        self->Close();
        return;
      }
      // A client still sending its body reads the answer only once it is done: discard what
      // it sends for a while, so it does not meet a reset instead.
      beast::error_code ignored;
      self->tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
      self->tcp().expires_after(std::chrono::seconds(5));
      self->Discard(0);
    });
  }

  void Discard(size_t discarded) {
    constexpr size_t kMaxDiscard = 256 << 20;
    if (closed_ || discarded > kMaxDiscard) {
      Close();
      return;
    }
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(64 << 10), [self = Self(), discarded](beast::error_code ec, size_t n) {
      if (ec) {
        self->Close();
        return;
      }
      self->Discard(discarded + n);
    });
  }

  const std::shared_ptr<ServerState> state_;  // first: it outlives the stream
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Exchange> exchange_;  // the open one
  std::deque<Queued> queue_;
  bool reading_ = false;
  bool writing_ = false;
  bool finishing_ = false;  // Finish: close once the open answer is written
  bool closed_ = false;
};

http::response<http::empty_body> Exchange::Header(int status, const std::string& content_type,
                                                  const HttpHeaders& headers) const {
  http::response<http::empty_body> header{static_cast<http::status>(status), version_};
  header.set(http::field::server, "moe-server");
  header.set(http::field::content_type, content_type);
  for (const auto& [name, value] : headers) header.set(name, value);
  header.keep_alive(keep_alive_);
  return header;
}

void Exchange::Post(Output output, bool last) {
  pending_.fetch_add(output.data.size());
  net::post(connection_->executor(), [self = shared_from_this(), output = std::move(output), last]() mutable {
    self->connection_->Write(self, std::move(output), last);
  });
}

void Exchange::Reply(int status, std::string content_type, std::string body, HttpHeaders headers) {
  {
    absl::MutexLock lock(&mu_);
    if (gone_ || started_ || ended_) return;
    started_ = ended_ = true;
  }
  http::response<http::string_body> response{static_cast<http::status>(status), version_};
  response.base() = Header(status, content_type, headers).base();
  if (request_.method == "HEAD") {  // the headers a GET would get, and no body
    response.content_length(body.size());
  } else {
    response.body() = std::move(body);
    response.prepare_payload();
  }
  Post({Output::Kind::kRaw, Serialize(response)}, /*last=*/true);
}

void Exchange::StartStream(int status, std::string content_type, HttpHeaders headers) {
  if (!Claim(&started_)) return;
  http::response<http::empty_body> header = Header(status, content_type, headers);
  header.set(http::field::cache_control, "no-cache");
  header.chunked(true);
  std::ostringstream out;
  out << header.base();
  Post({Output::Kind::kRaw, std::move(out).str()}, /*last=*/false);
}

bool Exchange::Send(std::string data) {
  {
    absl::MutexLock lock(&mu_);
    if (gone_ || ended_ || !started_) return false;
  }
  if (pending_.load() > max_pending_) return false;
  if (!data.empty()) Post({Output::Kind::kChunk, std::move(data)}, /*last=*/false);
  return true;
}

void Exchange::EndStream() {
  {
    absl::MutexLock lock(&mu_);
    if (gone_ || ended_ || !started_) return;
    ended_ = true;
  }
  Post({Output::Kind::kLastChunk, ""}, /*last=*/true);
}

void Exchange::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (gone_) return;
    gone_ = ended_ = true;
    on_gone_ = nullptr;  // the caller knows
  }
  net::post(connection_->executor(), [connection = connection_] { connection->Close(); });
}

}  // namespace

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [n, value] : headers) {
    if (n == name) return value;
  }
  return {};
}

struct HttpServer::Impl {
  const std::shared_ptr<ServerState> state = std::make_shared<ServerState>();
  tcp::acceptor acceptor{state->io};
  std::vector<std::thread> threads;
  int port = 0;

  void Accept() {
    acceptor.async_accept(net::make_strand(state->io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == net::error::operation_aborted) return;  // Stop
        Log(LogLevel::kWarning, absl::StrCat("HTTP accept failed: ", ec.message()));
      } else {
        socket.set_option(tcp::no_delay(true));
        ServerState& s = *state;
        {
          absl::MutexLock lock(&s.mu);
          if (s.stopping) return;
          ++s.open;
        }
        std::shared_ptr<Connection> connection;
        if (s.tls) {
          connection = std::make_shared<StreamConnection<beast::ssl_stream<beast::tcp_stream>>>(state, std::move(socket), *s.tls);
        } else {
          connection = std::make_shared<StreamConnection<beast::tcp_stream>>(state, std::move(socket));
        }
        {
          absl::MutexLock lock(&s.mu);
          // Forget connections that have ended.
          for (auto it = s.connections.begin(); it != s.connections.end();) {
            it = it->expired() ? s.connections.erase(it) : std::next(it);
          }
          s.connections.insert(connection);
        }
        net::dispatch(connection->executor(), [connection] { connection->Start(); });
      }
      Accept();
    });
  }
};

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(absl::ZeroDuration()); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(HttpServerOptions options,
                                                              HttpHandler handler) {
  auto impl = std::make_unique<Impl>();
  impl->state->options = std::move(options);
  impl->state->handler = std::move(handler);
  const HttpServerOptions& o = impl->state->options;
  if (o.io_threads < 1) return absl::InvalidArgumentError("the HTTP server needs at least one I/O thread");
  if (o.tls.enabled()) {
    ASSIGN_OR_RETURN(impl->state->tls, MakeTlsContext(o.tls));
  }
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(o.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad HTTP host \"", o.host, "\": ", ec.message()));
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(o.port));
  tcp::acceptor& acceptor = impl->acceptor;
  if (!acceptor.open(endpoint.protocol(), ec) && !acceptor.set_option(net::socket_base::reuse_address(true), ec) &&
      !acceptor.bind(endpoint, ec) && !acceptor.listen(net::socket_base::max_listen_connections, ec)) {
    impl->port = acceptor.local_endpoint().port();
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", o.host, ":", o.port, ": ", ec.message()));
  }
  impl->Accept();
  for (int i = 0; i < o.io_threads; ++i) {
    impl->threads.emplace_back([io = &impl->state->io] { io->run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

int HttpServer::port() const { return impl_->port; }

int HttpServer::open_connections() const {
  absl::MutexLock lock(&impl_->state->mu);
  return impl_->state->open;
}

void HttpServer::Stop(absl::Duration flush_timeout) {
  if (impl_ == nullptr || impl_->threads.empty()) return;
  Impl& impl = *impl_;
  ServerState& state = *impl.state;
  auto live = [&state] {
    std::vector<std::shared_ptr<Connection>> open;
    absl::MutexLock lock(&state.mu);
    state.stopping = true;
    for (const auto& weak : state.connections) {
      if (auto c = weak.lock()) open.push_back(std::move(c));
    }
    return open;
  };
  net::post(state.io, [&impl] {
    beast::error_code ignored;
    impl.acceptor.close(ignored);
  });
  // Answers already made reach their clients, for up to `flush_timeout`; then whatever is
  // left is dropped.
  for (const auto& c : live()) net::post(c->executor(), [c] { c->Finish(); });
  {
    absl::MutexLock lock(&state.mu);
    auto none_open = [&state]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state.mu) { return state.open == 0; };
    state.mu.AwaitWithTimeout(absl::Condition(&none_open), flush_timeout);
  }
  for (const auto& c : live()) net::post(c->executor(), [c] { c->Close(); });
  {
    absl::MutexLock lock(&state.mu);
    state.connections.clear();
  }
  // Everything left ends once the closes have run: the threads' work runs out.
  for (std::thread& t : impl.threads) t.join();
  impl.threads.clear();
  // A close posted as the threads ran out of work runs here: left queued, it would hold its
  // connection, which holds the io_context that holds it, and none of them would be freed.
  state.io.restart();
  state.io.run();
}

}  // namespace moe::server
