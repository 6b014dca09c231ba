// DeviceStepBatch: a StepBatch's arrays on the GPU, plus the sizes the host launches with.
//
// The index arrays of one step go to the device in one copy from pinned memory, at fixed
// addresses sized for the largest step, so a captured decode graph reads each step's
// values. Sizes the kernels need are on the host too (grids are chosen from them).
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/step_batch.h"

namespace moe::cuda {

// Device pointers into one step's index arrays (valid until the next Upload).
struct DeviceStepBatch {
  const int32_t* token_ids = nullptr;     // [T]
  const int32_t* positions = nullptr;     // [T]
  const int32_t* query_starts = nullptr;  // [S+1]
  const int32_t* context_lens = nullptr;  // [S]
  const int32_t* block_tables = nullptr;  // [S, max_blocks_per_seq]
  const int64_t* slot_mapping = nullptr;  // [T]
  const int32_t* logits_rows = nullptr;   // [S'] token indices, S' <= T
  int32_t num_tokens = 0;                 // T
  int32_t num_seqs = 0;                   // S
  int32_t num_logits_rows = 0;            // S'
  int32_t max_blocks_per_seq = 0;
  int32_t max_query_len = 0;    // longest query of the step (1 for a pure decode step)
  int32_t max_context_len = 0;  // longest context of the step
};

struct StepBatchCapacity {
  int32_t max_tokens = 0;          // T (and S': a logits row is a token)
  int32_t max_seqs = 0;            // S
  int32_t max_blocks_per_seq = 0;
};

// Owns the pinned host staging area and the device copy of step index arrays.
class StepBatchUploader {
 public:
  static absl::StatusOr<StepBatchUploader> Create(const StepBatchCapacity& capacity);
  StepBatchUploader(StepBatchUploader&&) noexcept;
  StepBatchUploader& operator=(StepBatchUploader&&) noexcept;
  ~StepBatchUploader();

  // Packs `batch` into pinned memory and enqueues one host-to-device copy on `stream`.
  // The batch must fit the capacity (the error names what does not). The pinned area is
  // reused, so the caller waits for the step to finish before uploading the next one.
  absl::StatusOr<DeviceStepBatch> Upload(const StepBatch& batch, cudaStream_t stream);

  const StepBatchCapacity& capacity() const { return capacity_; }

 private:
  StepBatchUploader() = default;

  StepBatchCapacity capacity_;
  void* pinned_ = nullptr;  // cudaHostAlloc'd, `bytes_` long
  DeviceTensor device_;     // [bytes_] raw
  size_t bytes_ = 0;
};

}  // namespace moe::cuda
