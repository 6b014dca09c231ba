// ServerProcess (see server_process.h).
#include "tests/server/server_process.h"

#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace moe::testing {
namespace {

std::string Binary() { return std::string(MOE_BIN_DIR) + "/moe-server"; }

bool Has(const std::vector<std::string>& args, const std::string& flag) {
  return std::any_of(args.begin(), args.end(),
                     [&](const std::string& a) { return absl::StartsWith(a, flag); });
}

// Starts the binary (under mpirun with `ranks` > 1, in a process group of its own) with
// stdout into a pipe (returned) and stderr into `log_path`.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log_path, int* stdout_fd,
            int ranks = 1) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t test = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    FILE* log = std::fopen(log_path.c_str(), "w");
    if (log != nullptr) dup2(fileno(log), STDERR_FILENO);
    close(fds[0]);
    setpgid(0, 0);
    // A test that dies (a failed assertion's abort, a sanitizer's halt) takes its server with
    // it: SIGTERM, which mpirun passes on to its ranks. Otherwise they live on, spinning.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != test) _exit(127);  // the test died before the line above
    std::vector<std::string> argv_strings;
    if (ranks > 1) {
      argv_strings = {MOE_MPIRUN, "--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
                      "-np", std::to_string(ranks)};
    }
    argv_strings.push_back(Binary());
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  *stdout_fd = fds[0];
  return pid;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(std::vector<std::string> args,
                                                                    absl::Duration timeout, int ranks) {
  if (ranks > 1 && std::string(MOE_MPIRUN).empty()) return absl::UnimplementedError("this build has no mpirun");
  if (!Has(args, "--port")) args.push_back("--port=0");
  if (!Has(args, "--metrics_port")) args.push_back("--metrics_port=0");
  if (!Has(args, "--http_port")) args.push_back("--http_port=0");
  // Tests run in parallel: a small KV cache each, not the 1 GiB default.
  if (!Has(args, "--kv_blocks") && !Has(args, "--kv_cache_memory"))
    args.push_back("--kv_blocks=1024");
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  static int counter = 0;
  server->log_path_ = (std::filesystem::temp_directory_path() /
                       absl::StrCat("moe_server_test.", getpid(), ".", counter++, ".log"))
                          .string();
  server->pid_ = Spawn(args, server->log_path_, &server->stdout_fd_, ranks);
  if (server->pid_ < 0) return absl::InternalError("fork failed");
  server->group_ = ranks > 1;
  std::string out;
  const absl::Time deadline = absl::Now() + timeout;
  while (!absl::StrContains(out, "moe-server: serving")) {
    pollfd p{.fd = server->stdout_fd_, .events = POLLIN};
    const int wait_ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    char buffer[4096];
    ssize_t n = 0;
    if (wait_ms <= 0 || poll(&p, 1, wait_ms) <= 0 ||
        (n = read(server->stdout_fd_, buffer, sizeof(buffer))) <= 0) {
      return absl::UnavailableError(
          absl::StrCat("moe-server did not start; stdout: ", out, "\nstderr: ", server->Log()));
    }
    out.append(buffer, n);
  }
  const size_t at = out.find("listening on ");
  char host[64];
  if (at == std::string::npos ||
      std::sscanf(out.c_str() + at, "listening on %63[^:]:%d (gRPC), metrics on %*[^:]:%d, HTTP on %*[^:]:%d",
                  host, &server->port_, &server->metrics_port_, &server->http_port_) < 2) {
    return absl::InternalError(absl::StrCat("cannot read the ports from: ", out));
  }
  return server;
}

std::pair<int, std::string> ServerProcess::RunToExit(const std::vector<std::string>& args) {
  ServerProcess server;
  static int counter = 0;
  server.log_path_ = (std::filesystem::temp_directory_path() /
                      absl::StrCat("moe_server_run.", getpid(), ".", counter++, ".log"))
                         .string();
  server.pid_ = Spawn(args, server.log_path_, &server.stdout_fd_);
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = read(server.stdout_fd_, buffer, sizeof(buffer))) > 0;) out.append(buffer, n);
  const int code = server.Wait();
  return {code, out + server.Log()};
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(group_ ? -pid_ : pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  } else if (group_ && leader_ > 0) {
    kill(-leader_, SIGKILL);  // ranks mpirun left behind
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  if (!log_path_.empty()) std::filesystem::remove(log_path_);
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

void ServerProcess::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

int ServerProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (pid_ > 0) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      leader_ = pid_;
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (absl::Now() > deadline) return -1;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return -1;
}

pid_t ServerProcess::RankPid(int rank, absl::Duration timeout) const {
  const std::string key = absl::StrCat("rank ", rank, " of ");
  const absl::Time deadline = absl::Now() + timeout;
  do {
    const std::string log = Log();
    const size_t at = log.find(key);
    const size_t pid_at = at == std::string::npos ? at : log.find("(pid ", at);
    if (pid_at != std::string::npos) return static_cast<pid_t>(std::atol(log.c_str() + pid_at + 5));
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::Now() < deadline);
  return -1;
}

std::string ServerProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace moe::testing
