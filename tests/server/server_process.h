// ServerProcess: a real moe-server child process for the server tests. Start() launches
// build/bin/moe-server on free loopback ports, waits for its "serving" line and reads the
// ports from its "listening" line; the destructor kills it if it still runs.
//
//   auto server = ServerProcess::Start({"--model", dir});
//   ASSERT_TRUE(server.ok()) << server.status();
//   auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
//   (*server)->Signal(SIGTERM);  EXPECT_EQ((*server)->Wait(), 0);
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace moe::testing {

class ServerProcess {
 public:
  // `args` come after the binary; --port 0, --metrics_port 0 and --kv_blocks 1024 are added
  // unless given. With `ranks` > 1 it runs under mpirun, as that many ranks in its own
  // process group (killed whole by the destructor).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      std::vector<std::string> args, absl::Duration timeout = absl::Seconds(60), int ranks = 1);
  // Runs moe-server to its end: (exit code, stdout + stderr).
  static std::pair<int, std::string> RunToExit(const std::vector<std::string>& args);
  ~ServerProcess();

  std::string address() const;  // "127.0.0.1:port"
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  int http_port() const { return http_port_; }  // the OpenAI API

  void Signal(int sig);
  // Under mpirun: the pid of rank `rank`, from the line each rank logs once loaded (waiting
  // up to `timeout` for it); -1 if that rank has not logged it.
  pid_t RankPid(int rank, absl::Duration timeout = absl::Seconds(30)) const;
  // Waits for the exit; the exit code, or 128 + signal; -1 past the timeout.
  int Wait(absl::Duration timeout = absl::Seconds(60));
  std::string Log() const;  // its stderr so far

 private:
  ServerProcess() = default;

  pid_t pid_ = -1;
  pid_t leader_ = -1;   // the process group, once pid_ was reaped
  bool group_ = false;  // under mpirun, in a process group of its own
  int stdout_fd_ = -1;
  std::string log_path_;
  int port_ = 0;
  int metrics_port_ = 0;
  int http_port_ = 0;
};

}  // namespace moe::testing
