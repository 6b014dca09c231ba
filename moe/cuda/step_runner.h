// StepRunner: how a step of a CUDA model reaches the GPU, apart from what the step computes.
//
// It uploads the step arrays, pads decode steps (one token per sequence) to a power of two
// and replays them as CUDA graphs, captured once per (padded batch, context bucket), and
// copies the logits back, running the head again in turns of max_seqs rows when a step
// wants more. The model is a StepProgram: the runner calls it to enqueue the step and the
// head, and knows nothing of layers or experts. A step that samples runs the device sampler
// (runtime/cuda/device_sampler.h) after the head, inside the decode graph, and copies back
// only the samples.
//
//   StepRunner runner(options, stream);
//   RETURN_IF_ERROR(runner.PrepareFor(kv_shape));                          // with each new KV cache
//   ASSIGN_OR_RETURN(Tensor logits, runner.Run(batch, cache, program, graphs));   // [S', V] f32
//   ASSIGN_OR_RETURN(StepSamples s, runner.RunAndSample(batch, cache, program, graphs, sampling));
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "runtime/cuda/device_kv_cache.h"
#include "runtime/cuda/device_sampler.h"
#include "runtime/cuda/device_step_batch.h"
#include "runtime/cuda/graph_cache.h"
#include "runtime/sampling.h"
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
  // The same step with its logits sampled on the device, one row of `sampling` per logits
  // row (it must fit the sampler: CanSample).
  absl::StatusOr<StepSamples> RunAndSample(const StepBatch& batch, const DeviceKvCache& cache, StepProgram& program,
                                           bool graphs, const SamplingBatch& sampling);
  bool CanSample(const SamplingBatch& sampling) const { return sampler_.has_value() && sampler_->Fits(sampling); }

  // How the steps so far were launched (read it between steps). A decode step of a size
  // seen before is one graph launch between its upload and its logits copy.
  struct Counts {
    int64_t eager = 0;           // launched kernel by kernel (prefill; a decode size's first)
    int64_t graph_replays = 0;   // launched as one CUDA graph
    int64_t graph_captures = 0;
    int64_t last_graph_kernels = 0;  // kernel nodes in the graph captured last
  };
  const Counts& counts() const { return counts_; }
  void ClearGraphs() {
    graphs_.Clear();
    sampling_graphs_.Clear();
  }

 private:
  // What a step hands back: its logits, or their samples when `sampling` is set.
  struct Output {
    const SamplingBatch* sampling = nullptr;
    Tensor logits;
    StepSamples samples;
  };
  absl::Status Step(const StepBatch& batch, const DeviceKvCache& cache, StepProgram& program, bool graphs,
                    Output& out);
  absl::Status DecodeWithGraph(const StepBatch& batch, const DeviceKvCache& cache, StepProgram& program,
                               Output& out);
  // Brings back what the step made of its first `rows` logits rows (the head again for rows
  // past max_seqs) and waits: the logits, or their samples (sampling the rows from
  // `unsampled` on; a graph samples its own).
  absl::Status Finish(const DeviceStepBatch& batch, int32_t rows, int32_t unsampled, StepProgram& program,
                      Output& out);

  StepRunnerOptions options_;
  cudaStream_t stream_;
  std::optional<StepBatchUploader> uploader_;
  std::optional<DeviceSampler> sampler_;
  GraphCache graphs_;           // decode steps that return logits
  GraphCache sampling_graphs_;  // decode steps that sample them
  const DeviceKvCache* graphs_cache_ = nullptr;  // the cache the graphs write
  bool graphs_failed_ = false;  // a capture failed once: decode runs eagerly from then on
  Counts counts_;
};

}  // namespace moe::cuda
