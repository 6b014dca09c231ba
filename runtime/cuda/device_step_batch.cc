#include "runtime/cuda/device_step_batch.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/cuda_check.h"

namespace moe::cuda {
namespace {

// Byte offsets of each array inside the packed area; every array starts 16-byte aligned.
struct Layout {
  size_t token_ids, positions, query_starts, context_lens, block_tables, slot_mapping,
      logits_rows, bytes;
};

size_t AlignUp(size_t n) { return (n + 15) & ~size_t{15}; }

Layout MakeLayout(int64_t tokens, int64_t seqs, int64_t blocks_per_seq, int64_t logits_rows) {
  Layout l{};
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t start = at;
    at = AlignUp(at + bytes);
    return start;
  };
  l.token_ids = take(tokens * sizeof(int32_t));
  l.positions = take(tokens * sizeof(int32_t));
  l.query_starts = take((seqs + 1) * sizeof(int32_t));
  l.context_lens = take(seqs * sizeof(int32_t));
  l.slot_mapping = take(tokens * sizeof(int64_t));
  l.logits_rows = take(logits_rows * sizeof(int32_t));
  l.block_tables = take(seqs * blocks_per_seq * sizeof(int32_t));  // last: copied only as far as used
  l.bytes = at;
  return l;
}

}  // namespace

absl::StatusOr<StepBatchUploader> StepBatchUploader::Create(const StepBatchCapacity& capacity) {
  if (capacity.max_tokens < 1 || capacity.max_seqs < 1 || capacity.max_blocks_per_seq < 1) {
    return absl::InvalidArgumentError("step batch capacity needs at least one token, sequence and block");
  }
  StepBatchUploader up;
  up.capacity_ = capacity;
  up.bytes_ = MakeLayout(capacity.max_tokens, capacity.max_seqs, capacity.max_blocks_per_seq,
                         capacity.max_tokens)
                  .bytes;
  CUDA_RETURN_IF_ERROR(cudaHostAlloc(&up.pinned_, up.bytes_, cudaHostAllocDefault));
  auto device = DeviceTensor::Empty(DType::kI32, {static_cast<int64_t>(up.bytes_ / 4)});
  if (!device.ok()) return device.status();
  up.device_ = *std::move(device);
  return up;
}

StepBatchUploader::StepBatchUploader(StepBatchUploader&& other) noexcept { *this = std::move(other); }

StepBatchUploader& StepBatchUploader::operator=(StepBatchUploader&& other) noexcept {
  if (this != &other) {
    if (pinned_ != nullptr) cudaFreeHost(pinned_);
    capacity_ = other.capacity_;
    pinned_ = std::exchange(other.pinned_, nullptr);
    device_ = std::move(other.device_);
    bytes_ = other.bytes_;
  }
  return *this;
}

StepBatchUploader::~StepBatchUploader() {
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
}

absl::StatusOr<DeviceStepBatch> StepBatchUploader::Upload(const StepBatch& batch, cudaStream_t stream) {
  const int64_t T = batch.num_tokens(), S = batch.num_seqs(), R = batch.logits_rows.size();
  auto too_many = [](int64_t n, const char* what, int64_t limit) {
    return absl::InvalidArgumentError(absl::StrCat("step of ", n, " ", what,
                                                   " exceeds the device step's capacity of ", limit));
  };
  if (T > capacity_.max_tokens) return too_many(T, "tokens", capacity_.max_tokens);
  if (S > capacity_.max_seqs) return too_many(S, "sequences", capacity_.max_seqs);
  if (R > capacity_.max_tokens) return too_many(R, "logits rows", capacity_.max_tokens);
  if (batch.max_blocks_per_seq > capacity_.max_blocks_per_seq) {
    return too_many(batch.max_blocks_per_seq, "KV blocks per sequence", capacity_.max_blocks_per_seq);
  }
  if (batch.positions.size() != size_t(T) || batch.slot_mapping.size() != size_t(T) ||
      batch.query_starts.size() != size_t(S + 1) ||
      batch.block_tables.size() != size_t(S) * size_t(std::max(batch.max_blocks_per_seq, 0))) {
    return absl::InvalidArgumentError("step batch arrays disagree in size (run ValidateStepBatch first)");
  }
  // Arrays are packed at the capacity's offsets, so pointers stay put from step to step
  // (a captured graph keeps reading the same addresses).
  const Layout l = MakeLayout(capacity_.max_tokens, capacity_.max_seqs, capacity_.max_blocks_per_seq,
                              capacity_.max_tokens);
  char* host = static_cast<char*>(pinned_);
  auto put = [host](size_t offset, const auto& values) {
    if (!values.empty()) std::memcpy(host + offset, values.data(), values.size() * sizeof(values[0]));
  };
  put(l.token_ids, batch.token_ids);
  put(l.positions, batch.positions);
  put(l.query_starts, batch.query_starts);
  put(l.context_lens, batch.context_lens);
  put(l.block_tables, batch.block_tables);
  put(l.slot_mapping, batch.slot_mapping);
  put(l.logits_rows, batch.logits_rows);
  // One copy, up to the end of the block tables actually used.
  const size_t used = l.block_tables + batch.block_tables.size() * sizeof(int32_t);
  char* dev = static_cast<char*>(device_.raw());
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dev, host, used, cudaMemcpyHostToDevice, stream));

  DeviceStepBatch d;
  d.token_ids = reinterpret_cast<const int32_t*>(dev + l.token_ids);
  d.positions = reinterpret_cast<const int32_t*>(dev + l.positions);
  d.query_starts = reinterpret_cast<const int32_t*>(dev + l.query_starts);
  d.context_lens = reinterpret_cast<const int32_t*>(dev + l.context_lens);
  d.block_tables = reinterpret_cast<const int32_t*>(dev + l.block_tables);
  d.slot_mapping = reinterpret_cast<const int64_t*>(dev + l.slot_mapping);
  d.logits_rows = reinterpret_cast<const int32_t*>(dev + l.logits_rows);
  d.num_tokens = static_cast<int32_t>(T);
  d.num_seqs = static_cast<int32_t>(S);
  d.num_logits_rows = static_cast<int32_t>(R);
  d.max_blocks_per_seq = batch.max_blocks_per_seq;
  for (int64_t s = 0; s < S; ++s) {
    d.max_query_len = std::max(d.max_query_len, batch.query_starts[s + 1] - batch.query_starts[s]);
    d.max_context_len = std::max(d.max_context_len, batch.context_lens[s]);
  }
  return d;
}

}  // namespace moe::cuda
