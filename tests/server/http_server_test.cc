// HttpServer on its own, with handlers written here: keep-alive, HEAD, answers from other
// threads, chunked streams, the 413 for a large body, the client-gone callback, the bound on
// a stream nobody reads, and Stop with connections open: answers already made are written
// out within its flush timeout, then the rest is closed.
#include "server/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace moe::server {
namespace {

using ::testing::HasSubstr;

// A connected loopback socket, closed at the end.
class RawClient {
 public:
  explicit RawClient(int port, int receive_buffer = 0) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  }
  ~RawClient() { Close(); }
  bool connected() const { return connected_; }
  void Send(const std::string& data) { ASSERT_EQ(write(fd_, data.data(), data.size()), ssize_t(data.size())); }
  // Reads until `needle` has come, the peer closes, or 5 s pass.
  std::string ReadUntil(const std::string& needle) {
    std::string got;
    timeval timeout{.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    char buffer[4096];
    while (got.find(needle) == std::string::npos) {
      const ssize_t n = read(fd_, buffer, sizeof(buffer));
      if (n <= 0) break;
      got.append(buffer, n);
    }
    return got;
  }
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

std::unique_ptr<HttpServer> Start(HttpHandler handler, HttpServerOptions options = {}) {
  options.port = 0;
  auto server = HttpServer::Start(options, std::move(handler));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(HttpServerTest, AnswersKeepAliveRequestsOnOneConnectionAndHead) {
  std::atomic<int> handled{0};
  auto server = Start([&](std::shared_ptr<HttpExchange> x) {
    ++handled;
    x->Reply(200, "text/plain", x->request().method + " " + x->request().path + " " + x->request().body,
             {{"X-Test", std::string(x->request().Header("x-in"))}});
  });
  httplib::Client client("127.0.0.1", server->port());
  client.set_keep_alive(true);
  for (int i = 0; i < 3; ++i) {
    const httplib::Result r = client.Post("/echo?q=1", {{"X-In", "v"}}, "body" + std::to_string(i), "text/plain");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "POST /echo body" + std::to_string(i));  // the query is not the path
    EXPECT_EQ(r->get_header_value("X-Test"), "v");  // header names arrive in lower case
  }
  EXPECT_EQ(server->open_connections(), 1);
  const httplib::Result head = client.Head("/x");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->body, "");
  EXPECT_EQ(head->get_header_value("Content-Length"), "8");  // "HEAD /x " and no body
  EXPECT_EQ(handled, 4);
}

TEST(HttpServerTest, StreamsChunksAnsweredFromAnotherThread) {
  std::thread writer;
  auto server = Start([&](std::shared_ptr<HttpExchange> x) {
    writer = std::thread([x] {
      x->StartStream(200, "text/event-stream");
      for (int i = 0; i < 5; ++i) EXPECT_TRUE(x->Send("data: " + std::to_string(i) + "\n\n"));
      x->EndStream();
      EXPECT_FALSE(x->Send("late"));  // after the end: refused
    });
  });
  httplib::Client client("127.0.0.1", server->port());
  const httplib::Result r = client.Get("/stream");
  writer.join();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->get_header_value("Transfer-Encoding"), "chunked");
  EXPECT_EQ(r->body, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
}

TEST(HttpServerTest, ABodyOverTheLimitGets413AndTheServerGoesOn) {
  auto server = Start([](std::shared_ptr<HttpExchange> x) { x->Reply(200, "text/plain", "ok"); },
                      {.max_body_bytes = 1024});
  httplib::Client client("127.0.0.1", server->port());
  const httplib::Result big = client.Post("/", std::string(1 << 20, 'a'), "text/plain");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  EXPECT_THAT(big->body, HasSubstr("larger than 1024 bytes"));
  const httplib::Result small = client.Post("/", "tiny", "text/plain");
  ASSERT_TRUE(small);
  EXPECT_EQ(small->status, 200);
}

TEST(HttpServerTest, MalformedRequestsGet400) {
  auto server = Start([](std::shared_ptr<HttpExchange> x) { x->Reply(200, "text/plain", "ok"); });
  RawClient raw(server->port());
  ASSERT_TRUE(raw.connected());
  raw.Send("NOT HTTP AT ALL\r\n\r\n");
  EXPECT_THAT(raw.ReadUntil("}}"), HasSubstr("400 Bad Request"));
}

TEST(HttpServerTest, AClientThatLeavesAnOpenExchangeIsReportedGone) {
  absl::Notification gone;
  std::shared_ptr<HttpExchange> held;
  absl::Notification received;
  auto server = Start([&](std::shared_ptr<HttpExchange> x) {
    x->OnClientGone([&] { gone.Notify(); });
    held = x;  // never answered
    received.Notify();
  });
  {
    RawClient raw(server->port());
    raw.Send("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_TRUE(received.WaitForNotificationWithTimeout(absl::Seconds(5)));
  }
  EXPECT_TRUE(gone.WaitForNotificationWithTimeout(absl::Seconds(5)));
  held->Reply(200, "text/plain", "too late");  // harmless
}

TEST(HttpServerTest, AStreamNobodyReadsIsRefusedOnceTheBufferIsFull) {
  absl::Notification refused;
  std::thread writer;
  auto server = Start(
      [&](std::shared_ptr<HttpExchange> x) {
        writer = std::thread([x, &refused] {
          x->StartStream(200, "text/event-stream");
          const std::string event(64 << 10, 'x');
          for (int i = 0; i < 2000; ++i) {  // 128 MiB, far more than any socket buffer
            if (!x->Send(event)) {
              refused.Notify();
              x->Close();
              return;
            }
          }
        });
      },
      {.max_pending_bytes = 1 << 20});
  RawClient raw(server->port(), /*receive_buffer=*/4096);
  raw.Send("GET /firehose HTTP/1.1\r\nHost: x\r\n\r\n");  // and never reads
  EXPECT_TRUE(refused.WaitForNotificationWithTimeout(absl::Seconds(10)));
  writer.join();
}

TEST(HttpServerTest, StopClosesOpenConnectionsAndTellsTheirExchanges) {
  absl::Notification gone, received;
  std::shared_ptr<HttpExchange> held;
  auto server = Start([&](std::shared_ptr<HttpExchange> x) {
    x->OnClientGone([&] { gone.Notify(); });
    held = x;
    received.Notify();
  });
  RawClient raw(server->port());
  raw.Send("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(received.WaitForNotificationWithTimeout(absl::Seconds(5)));
  RawClient idle(server->port());  // connected, sends nothing
  server->Stop();
  EXPECT_TRUE(gone.HasBeenNotified());
  EXPECT_EQ(raw.ReadUntil("never"), "");  // closed without an answer
}

// A streamed answer, wholly queued and ended but not yet read by a slow client when the
// server stops: Stop writes it out before closing.
TEST(HttpServerTest, StopWritesOutAnswersAlreadyMadeToSlowReaders) {
  absl::Notification ended;
  std::thread writer;
  const std::string event(64 << 10, 'x');
  constexpr int kEvents = 64;  // 4 MiB, more than the socket buffers hold
  auto server = Start(
      [&](std::shared_ptr<HttpExchange> x) {
        writer = std::thread([&, x] {
          x->StartStream(200, "text/event-stream");
          for (int i = 0; i < kEvents; ++i) EXPECT_TRUE(x->Send(event));
          x->EndStream();
          ended.Notify();
        });
      },
      {.max_pending_bytes = 64 << 20});
  RawClient raw(server->port(), /*receive_buffer=*/4096);
  raw.Send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(ended.WaitForNotificationWithTimeout(absl::Seconds(10)));
  writer.join();
  auto stopped = std::async(std::launch::async, [&] { server->Stop(absl::Seconds(30)); });
  const std::string got = raw.ReadUntil("\r\n0\r\n\r\n");  // the last chunk
  EXPECT_TRUE(absl::EndsWith(got, "\r\n0\r\n\r\n")) << "the answer was cut after " << got.size() << " bytes";
  EXPECT_GT(got.size(), size_t{kEvents} * event.size());
  stopped.wait();
}

// A client that never reads holds the exit only for the flush timeout.
TEST(HttpServerTest, StopGivesUpOnAClientThatDoesNotReadAfterTheFlushTimeout) {
  absl::Notification ended;
  std::thread writer;
  auto server = Start(
      [&](std::shared_ptr<HttpExchange> x) {
        writer = std::thread([&, x] {
          x->StartStream(200, "text/event-stream");
          for (int i = 0; i < 64; ++i) x->Send(std::string(64 << 10, 'x'));
          x->EndStream();
          ended.Notify();
        });
      },
      {.max_pending_bytes = 64 << 20});
  RawClient raw(server->port(), /*receive_buffer=*/4096);
  raw.Send("GET /never-read HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(ended.WaitForNotificationWithTimeout(absl::Seconds(10)));
  writer.join();
  const absl::Time start = absl::Now();
  server->Stop(absl::Milliseconds(300));
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(250));
  EXPECT_LT(took, absl::Seconds(5));
  EXPECT_EQ(server->open_connections(), 0);
}

}  // namespace
}  // namespace moe::server
