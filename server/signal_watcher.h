// SignalWatcher: SIGTERM and SIGINT as events rather than interrupts. The constructor blocks
// both in the calling thread, and so in every thread started after it (construct it first
// in main), and a thread of its own collects them with sigtimedwait.
//
//   SignalWatcher signals;          // before any other thread starts
//   ... start the server ...
//   int sig = signals.Wait();       // SIGTERM or SIGINT: begin the drain
//   if (signals.count() >= 2) ...   // asked again: cut the drain short
#pragma once

#include <atomic>
#include <string>
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
  // Signals received so far.
  int count() const;
  // While `phase` is set (say "loading the model"), a signal is reported on stderr as it
  // arrives and a second one ends the process at once (exit status 128 + signal): for a
  // phase that cannot be interrupted and in which nothing has been accepted yet. An empty
  // phase ends that.
  void SetExitOnSecondSignal(std::string phase);

 private:
  void Loop();

  std::atomic<bool> stop_{false};
  mutable absl::Mutex mu_;
  int signal_ ABSL_GUARDED_BY(mu_) = 0;  // the first
  int count_ ABSL_GUARDED_BY(mu_) = 0;
  std::string exit_phase_ ABSL_GUARDED_BY(mu_);  // empty: a second signal is only counted
  std::thread thread_;
};

}  // namespace moe::server
