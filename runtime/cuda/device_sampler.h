// DeviceSampler: a step's sampling on the GPU (the kernel of runtime/cuda/sampler.h) with
// its buffers. The parameters go up from pinned memory before the step; after it only the
// tokens, their logprobs and the top logprobs asked for come back, never the logits: the
// bytes copied grow with the rows, not with rows x vocabulary.
//
//   ASSIGN_OR_RETURN(DeviceSampler sampler, DeviceSampler::Create({.max_rows = T, .vocab_size = V}));
//   RETURN_IF_ERROR(sampler.Upload(sampling, padded_rows, stream));   // before the step
//   sampler.Enqueue(logits, first_row, rows, stream);    // after each head; capturable
//   RETURN_IF_ERROR(sampler.EnqueueReadback(sampling, stream));
//   ... the stream finishes ...
//   sampler.Read(sampling, out);                          // StepSamples
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "absl/status/statusor.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/cuda/pinned_buffer.h"
#include "runtime/cuda/sampler.h"
#include "runtime/sampling.h"

namespace moe::cuda {

struct DeviceSamplerCapacity {
  int32_t max_rows = 0;          // logits rows in one step, graph padding included
  int32_t vocab_size = 0;        // V
  int32_t max_top_logprobs = 20;  // the widest top-n a row may ask for (the engine's default cap)
};

class DeviceSampler {
 public:
  static absl::StatusOr<DeviceSampler> Create(const DeviceSamplerCapacity& capacity);

  // Whether `sampling` fits the capacity: its rows and its top logprobs (adjustments grow).
  bool Fits(const SamplingBatch& sampling) const;

  // Copies the parameters to the device: `sampling`'s rows, then greedy ones up to
  // `padded_rows` (the padding of a decode graph, whose rows are sampled and dropped). The
  // previous step must have finished: the pinned staging is reused.
  absl::Status Upload(const SamplingBatch& sampling, int32_t padded_rows, cudaStream_t stream);

  // Samples `rows` logits rows of `logits` [rows, V] f32 (the adjusted tokens are
  // overwritten), whose parameters and results start at `first_row`. No host sync.
  void Enqueue(float* logits, int32_t first_row, int32_t rows, cudaStream_t stream) const;

  // Copies the results of `sampling`'s rows back; Read them once the stream has finished.
  absl::Status EnqueueReadback(const SamplingBatch& sampling, cudaStream_t stream);
  void Read(const SamplingBatch& sampling, StepSamples& out) const;

 private:
  absl::Status ReserveAdjustments(size_t count);

  DeviceSamplerCapacity capacity_;
  // The device side: the params header, then [max_rows] RowSampling, in one buffer.
  DeviceTensor params_;
  DeviceTensor adjustments_;  // [adjustment_capacity_] TokenAdjustment
  DeviceTensor originals_;    // [adjustment_capacity_] f32
  DeviceTensor results_;      // [max_rows] DeviceSample
  DeviceTensor top_;          // [max_rows, max_top_logprobs] TokenLogprob
  size_t adjustment_capacity_ = 0;
  // Their pinned host sides.
  PinnedBuffer params_staging_;
  PinnedBuffer adjustments_staging_;
  PinnedBuffer results_host_;
  PinnedBuffer top_host_;
};

}  // namespace moe::cuda
