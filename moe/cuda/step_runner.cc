#include "moe/cuda/step_runner.h"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "runtime/cuda/cuda_check.h"
#include "runtime/status_macros.h"

namespace moe::cuda {
namespace {

int32_t PowerOfTwoAtLeast(int32_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return static_cast<int32_t>(std::min<int64_t>(p, std::numeric_limits<int32_t>::max()));
}

// `batch` (one token per sequence) plus one-token sequences up to `size`, each at position
// 0 in the scratch block; their logits rows come after the real ones.
// Block tables are laid out at the fixed stride `blocks_per_seq` (the uploader's capacity),
// unused entries pointing at the scratch block: a graph keeps the stride it was captured
// with, while the engine's max_blocks_per_seq grows with the longest sequence.
StepBatch PadDecodeBatch(const StepBatch& batch, int32_t size, int32_t blocks_per_seq, int32_t scratch_block,
                         int32_t block_size) {
  StepBatch b = batch;
  b.max_blocks_per_seq = blocks_per_seq;
  b.block_tables.assign(static_cast<size_t>(size) * blocks_per_seq, scratch_block);
  for (int32_t s = 0; s < batch.num_seqs(); ++s) {
    std::copy_n(batch.block_table(s), batch.max_blocks_per_seq, b.block_tables.begin() + int64_t{s} * blocks_per_seq);
  }
  for (int32_t s = batch.num_seqs(); s < size; ++s) {
    b.token_ids.push_back(0);
    b.positions.push_back(0);
    b.query_starts.push_back(s + 1);
    b.context_lens.push_back(1);
    b.slot_mapping.push_back(int64_t{scratch_block} * block_size);
    b.logits_rows.push_back(s);
  }
  return b;
}

bool IsDecode(const StepBatch& batch) {
  const int32_t S = batch.num_seqs();
  if (batch.num_tokens() != S || static_cast<int32_t>(batch.logits_rows.size()) != S) return false;
  for (int32_t i = 0; i < S; ++i) {
    if (batch.query_starts[i + 1] - batch.query_starts[i] != 1) return false;
  }
  return true;
}

}  // namespace

absl::Status StepProgram::WaitForStream(cudaStream_t stream) {
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status StepRunner::PrepareFor(const KvCacheShape& shape) {
  graphs_.Clear();  // they write the KV cache they were captured with
  const int64_t bs = shape.block_size;
  const int64_t max_context = std::min<int64_t>(options_.max_position_embeddings, shape.num_blocks * bs);
  const int32_t blocks_per_seq = static_cast<int32_t>((max_context + bs - 1) / bs);
  if (uploader_.has_value() && uploader_->capacity().max_blocks_per_seq >= blocks_per_seq) return absl::OkStatus();
  ASSIGN_OR_RETURN(StepBatchUploader up, StepBatchUploader::Create({.max_tokens = options_.max_tokens,
                                                                     .max_seqs = options_.max_seqs,
                                                                     .max_blocks_per_seq = blocks_per_seq}));
  uploader_.emplace(std::move(up));
  return absl::OkStatus();
}

absl::StatusOr<Tensor> StepRunner::Run(const StepBatch& batch, const DeviceKvCache& cache, StepProgram& program,
                                       bool graphs) {
  if (!uploader_.has_value()) return absl::FailedPreconditionError("the step runner was not prepared for a KV cache");
  if (graphs && IsDecode(batch) && batch.num_seqs() <= options_.max_graph_batch && !graphs_failed_) {
    return DecodeWithGraph(batch, cache, program);
  }
  ASSIGN_OR_RETURN(const DeviceStepBatch d, uploader_->Upload(batch, stream_));
  RETURN_IF_ERROR(program.BeginStep(d.num_tokens));
  RETURN_IF_ERROR(program.EnqueueStep(d, cache));
  ++counts_.eager;
  return Finish(d, d.num_logits_rows, program);
}

absl::StatusOr<Tensor> StepRunner::Finish(const DeviceStepBatch& d, int32_t rows, StepProgram& program) {
  const int64_t V = options_.vocab_size, chunk = options_.max_seqs;
  Tensor logits = Tensor::Empty(DType::kF32, {rows, V});  // [S', V]
  // EnqueueStep ran the head for the first `chunk` rows; later rows take it in turns.
  for (int32_t first = 0; first < rows; first += chunk) {
    const int32_t n = static_cast<int32_t>(std::min<int64_t>(chunk, rows - first));
    if (first > 0) RETURN_IF_ERROR(program.EnqueueHead(d, first, n));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data<float>() + first * V, program.logits().raw(),
                                         n * V * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  }
  RETURN_IF_ERROR(program.EnqueueReadback());
  RETURN_IF_ERROR(program.WaitForStream(stream_));
  program.EndStep();
  return logits;
}

absl::StatusOr<Tensor> StepRunner::DecodeWithGraph(const StepBatch& batch, const DeviceKvCache& cache,
                                                   StepProgram& program) {
  const int32_t largest = std::min({options_.max_graph_batch, options_.max_seqs, options_.max_tokens});
  const int32_t size = std::max(std::min(PowerOfTwoAtLeast(batch.num_seqs()), largest), batch.num_seqs());
  const StepBatch padded = PadDecodeBatch(batch, size, uploader_->capacity().max_blocks_per_seq,
                                          cache.scratch_block(), cache.shape().block_size);
  ASSIGN_OR_RETURN(DeviceStepBatch d, uploader_->Upload(padded, stream_));
  // The decode kernel's grid follows the longest context: bucket it by powers of two (at
  // least 512, at most what the cache holds) so a graph serves many steps. Only the grid
  // depends on it; each sequence still reads its own context length.
  const int32_t context_cap = static_cast<int32_t>(std::min<int64_t>(
      options_.max_position_embeddings, int64_t{cache.shape().num_blocks} * cache.shape().block_size));
  d.max_context_len = std::min(std::max(PowerOfTwoAtLeast(d.max_context_len), 512), context_cap);
  RETURN_IF_ERROR(program.BeginStep(batch.num_tokens()));  // padding is not a real token
  const GraphCache::Key key{d.num_seqs, d.max_context_len};
  if (graphs_cache_ != &cache) {  // graphs write the cache they were captured with
    graphs_.Clear();
    graphs_cache_ = &cache;
  }
  if (GraphCache::Exec* exec = graphs_.Find(key)) {
    RETURN_IF_ERROR(graphs_.Launch(*exec, stream_));
    ++counts_.graph_replays;
    return Finish(d, batch.num_seqs(), program);
  }
  // First step at this key: run it eagerly (which also warms cuBLAS up for these shapes),
  // then capture it for the next ones.
  RETURN_IF_ERROR(program.EnqueueStep(d, cache));
  ++counts_.eager;
  ASSIGN_OR_RETURN(Tensor logits, Finish(d, batch.num_seqs(), program));
  const absl::Status captured = graphs_.Capture(key, stream_, [&] { return program.EnqueueStep(d, cache); });
  if (captured.ok()) {
    ++counts_.graph_captures;
    counts_.last_graph_kernels = graphs_.last_kernel_nodes();
  } else {
    graphs_failed_ = true;
    std::fprintf(stderr, "moe: CUDA graph capture failed, decode steps run without graphs: %s\n",
                 captured.ToString().c_str());
  }
  return logits;
}

}  // namespace moe::cuda
