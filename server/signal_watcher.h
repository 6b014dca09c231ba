// SignalWatcher: SIGTERM and SIGINT as events rather than interrupts. The constructor blocks
// both in the calling thread, and so in every thread started after it (construct it first
// in main), and a thread of its own collects them with sigtimedwait.
//
//   SignalWatcher signals;          // before any other thread starts
//   ... start the server ...
//   int sig = signals.Wait();       // SIGTERM or SIGINT: begin the drain
#pragma once

#include <atomic>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace moe::server {

class SignalWatcher {
 public:
  SignalWatcher();
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // Blocks until a signal has arrived; returns the first one.
  int Wait();
  bool received() const;

 private:
  void Loop();

  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  int signal_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace moe::server
