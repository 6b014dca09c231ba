// StepRunner: how a step of a CUDA model reaches the GPU, apart from what the step computes.
//
// It uploads the step arrays, pads decode steps (one token per sequence) to a power of two
// and replays them as CUDA graphs, captured once per (padded batch, context bucket), and
// copies the logits back, running the head again in turns of max_seqs rows when a step
// wants more. The model is a StepProgram: the runner calls it to enqueue the step and the
// head, and knows nothing of layers or experts.
//
//   ASSIGN_OR_RETURN(StepRunner runner, StepRunner::Create(options, stream));
//   RETURN_IF_ERROR(runner.PrepareFor(kv_shape, max_context));   // with each new KV cache
//   ASSIGN_OR_RETURN(Tensor logits, runner.Run(batch, cache, program));   // [S', V] f32
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "runtime/cuda/device_kv_cache.h"
#include "runtime/cuda/device_step_batch.h"
#include "runtime/cuda/graph_cache.h"
#include "runtime/step_batch.h"
#include "runtime/tensor.h"

namespace moe::cuda {

// What a model runs in one step, enqueued on the runner's stream with no host sync.
class StepProgram {
 public:
  virtual ~StepProgram() = default;
  // Before the step is enqueued: `real_tokens` of its tokens are not graph padding.
  virtual absl::Status BeginStep(int32_t real_tokens) = 0;
  // The embedding to the head of logits rows [0, min(rows, max_seqs)).
  virtual absl::Status EnqueueStep(const DeviceStepBatch& batch, const DeviceKvCache& cache) = 0;
  // The final norm and head of logits rows [first, first + rows), rows <= max_seqs.
  virtual absl::Status EnqueueHead(const DeviceStepBatch& batch, int32_t first, int32_t rows) = 0;
  // Where the head writes: [max_seqs, V] f32.
  virtual const DeviceTensor& logits() const = 0;
  // Enqueues the copies the model wants back with the logits (before the runner waits), then,
  // once the stream has finished, reads them.
  virtual absl::Status EnqueueReadback() = 0;
  virtual void EndStep() = 0;
  // Waits for the step's stream (a model whose steps hold NCCL work bounds the wait).
  virtual absl::Status WaitForStream(cudaStream_t stream);
};

struct StepRunnerOptions {
  int32_t max_tokens = 0;
  int32_t max_seqs = 0;
  int32_t max_graph_batch = 0;  // decode steps of up to this many sequences replay as graphs
  int32_t vocab_size = 0;
  int32_t max_position_embeddings = 0;
};

class StepRunner {
 public:
  StepRunner(StepRunnerOptions options, cudaStream_t stream) : options_(options), stream_(stream) {}

  // With each new KV cache: step arrays for its longest context (graphs of older arrays go).
  absl::Status PrepareFor(const KvCacheShape& shape);
  bool prepared() const { return uploader_.has_value(); }
  const StepBatchUploader& uploader() const { return *uploader_; }

  // `graphs`: whether a decode step may replay as a graph (the model may forbid it).
  absl::StatusOr<Tensor> Run(const StepBatch& batch, const DeviceKvCache& cache, StepProgram& program, bool graphs);

  // How the steps so far were launched (read it between steps). A decode step of a size
  // seen before is one graph launch between its upload and its logits copy.
  struct Counts {
    int64_t eager = 0;           // launched kernel by kernel (prefill; a decode size's first)
    int64_t graph_replays = 0;   // launched as one CUDA graph
    int64_t graph_captures = 0;
    int64_t last_graph_kernels = 0;  // kernel nodes in the graph captured last
  };
  const Counts& counts() const { return counts_; }
  void ClearGraphs() { graphs_.Clear(); }

 private:
  absl::StatusOr<Tensor> DecodeWithGraph(const StepBatch& batch, const DeviceKvCache& cache, StepProgram& program);
  // Copies the first `rows` logits rows back (the head again for rows past max_seqs) and waits.
  absl::StatusOr<Tensor> Finish(const DeviceStepBatch& batch, int32_t rows, StepProgram& program);

  StepRunnerOptions options_;
  cudaStream_t stream_;
  std::optional<StepBatchUploader> uploader_;
  GraphCache graphs_;
  const DeviceKvCache* graphs_cache_ = nullptr;  // the cache the graphs write
  bool graphs_failed_ = false;  // a capture failed once: decode runs eagerly from then on
  Counts counts_;
};

}  // namespace moe::cuda
