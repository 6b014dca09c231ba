// SignalWatcher (see signal_watcher.h).
#include "server/signal_watcher.h"

#include <csignal>
#include <ctime>

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

}  // namespace moe::server
