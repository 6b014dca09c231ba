// GenerateCall: one Generate stream. It is both the gRPC write reactor and the engine's
// output sink: the engine thread hands it deltas and finals (never blocking: they queue, and
// queued chunks of a choice merge into one), gRPC threads write them one at a time, and the
// stream finishes once every choice's Final is written.
//
// A client cancel or an expired deadline aborts the request in the engine (its KV blocks are
// freed at the next step) and finishes the stream with CANCELLED; nothing more is written.
//
//   // in the service's Generate handler, after validation:
//   return GenerateCall::Start({.engine = &engine, .metrics = &metrics, .request_id = id,
//                               .on_finish = ...}, std::move(built));
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "moe/v1/generation.grpc.pb.h"
#include "runtime/engine/engine.h"
#include "server/metrics.h"
#include "server/request_builder.h"

namespace moe::server {

class GenerateCall final : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                           public OutputSink {
 public:
  struct Context {
    Engine* engine;
    Metrics* metrics;
    std::string request_id;  // the client's id, in every response (built.request.id is the
                             // engine's, unique to this stream)
    size_t max_message_bytes = 4 << 20;  // the server's gRPC send limit
    size_t max_pending_bytes = 16 << 20;  // a slower reader's stream is ended beyond this
    // When the stream issues its final status, on a gRPC thread: its request id is free
    // again (the engine may still be finishing an aborted request under its own id).
    std::function<void()> on_finish;
    // Right after the engine accepted the request: true if an Abort came for it before
    // the engine knew it (it is then aborted at once).
    std::function<bool()> take_early_abort;
  };

  // Submits `built` (whose request id is the engine's) to the engine and returns the
  // reactor; if the engine refuses it, the stream finishes with the engine's status.
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Start(Context context, BuiltRequest built);
  // A stream that finishes at once with `status` (bad request, server not serving).
  static grpc::ServerWriteReactor<v1::GenerateResponse>* Fail(grpc::Status status);

  // OutputSink: engine thread.
  void OnDelta(const OutputDelta& delta) override;
  void OnFinal(const FinalOutput& final) override;

  // Reactor: gRPC threads.
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  GenerateCall(Context context, const BuiltRequest& built);

  // Starts the next write, or finishes the stream when nothing is left; never under mu_
  // (gRPC may run OnWriteDone inline).
  void Pump();
  // Queues a message; a chunk right after a chunk of the same choice merges into it.
  void Enqueue(v1::GenerateResponse response);
  void AbortInEngine();

  const Context context_;
  const std::string engine_id_;  // the request's id in the engine
  const StreamOptions stream_;
  const int prompt_tokens_;

  // Touched only by sink calls, which the engine serializes.
  std::vector<int> completion_tokens_;       // [n] per choice
  std::vector<absl::Time> last_delta_time_;  // [n] per choice

  absl::Mutex mu_;
  // Merged chunks stay below this, and below half the message limit.
  static constexpr size_t kMaxMergedChunkBytes = 256 << 10;

  std::deque<v1::GenerateResponse> pending_ ABSL_GUARDED_BY(mu_);
  size_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int finals_left_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);  // sent when the last Final is written
  v1::GenerateResponse in_flight_;            // the message of the write in flight

  std::shared_ptr<GenerateCall> self_;  // gRPC's reference, dropped in OnDone
};

}  // namespace moe::server
