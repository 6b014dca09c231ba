// SignalWatcher (see signal_watcher.h).
#include "server/signal_watcher.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>

namespace moe::server {
namespace {

sigset_t Watched() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

SignalWatcher::SignalWatcher() {
  const sigset_t set = Watched();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  thread_ = std::thread([this] { Loop(); });
}

SignalWatcher::~SignalWatcher() {
  stop_ = true;
  thread_.join();
}

void SignalWatcher::Loop() {
  const sigset_t set = Watched();
  const timespec poll{.tv_sec = 0, .tv_nsec = 200'000'000};  // to notice stop_
  while (!stop_) {
    const int sig = sigtimedwait(&set, nullptr, &poll);
    if (sig <= 0) continue;
    absl::MutexLock lock(&mu_);
    if (signal_ == 0) signal_ = sig;
    ++count_;
    if (exit_phase_.empty()) continue;
    if (count_ == 1) {
      std::fprintf(stderr, "moe-server: SIG%s while %s; signal again to exit at once\n",
                   sigabbrev_np(sig), exit_phase_.c_str());
    } else {
      std::fprintf(stderr, "moe-server: second signal while %s; exiting now\n", exit_phase_.c_str());
      std::_Exit(128 + sig);
    }
  }
}

int SignalWatcher::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* sig) { return *sig != 0; }, &signal_));
  return signal_;
}

bool SignalWatcher::received() const {
  absl::MutexLock lock(&mu_);
  return signal_ != 0;
}

int SignalWatcher::count() const {
  absl::MutexLock lock(&mu_);
  return count_;
}

void SignalWatcher::SetExitOnSecondSignal(std::string phase) {
  absl::MutexLock lock(&mu_);
  exit_phase_ = std::move(phase);
}

}  // namespace moe::server
