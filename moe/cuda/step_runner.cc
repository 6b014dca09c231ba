#include "moe/cuda/step_runner.h"

#include <algorithm>
#include <cstdio>
#include <limits>

#include "absl/strings/str_cat.h"
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
  ClearGraphs();  // they write the KV cache they were captured with
  if (!sampler_.has_value()) {
    // S' <= T: a logits row is a token, and graph padding stays within max_tokens.
    ASSIGN_OR_RETURN(DeviceSampler sampler, DeviceSampler::Create({.max_rows = options_.max_tokens,
                                                                    .vocab_size = options_.vocab_size}));
    sampler_.emplace(std::move(sampler));
  }
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
  Output out;
  RETURN_IF_ERROR(Step(batch, cache, program, graphs, out));
  return std::move(out.logits);
}

absl::StatusOr<StepSamples> StepRunner::RunAndSample(const StepBatch& batch, const DeviceKvCache& cache,
                                                     StepProgram& program, bool graphs, const SamplingBatch& sampling) {
  if (sampling.num_rows() != static_cast<int32_t>(batch.logits_rows.size())) {
    return absl::InvalidArgumentError(absl::StrCat("the step samples ", batch.logits_rows.size(),
                                                   " logits rows but has sampling parameters for ",
                                                   sampling.num_rows()));
  }
  Output out{.sampling = &sampling};
  RETURN_IF_ERROR(Step(batch, cache, program, graphs, out));
  return std::move(out.samples);
}

absl::Status StepRunner::Step(const StepBatch& batch, const DeviceKvCache& cache, StepProgram& program, bool graphs,
                              Output& out) {
  if (!uploader_.has_value()) return absl::FailedPreconditionError("the step runner was not prepared for a KV cache");
  if (graphs && IsDecode(batch) && batch.num_seqs() <= options_.max_graph_batch && !graphs_failed_) {
    return DecodeWithGraph(batch, cache, program, out);
  }
  ASSIGN_OR_RETURN(const DeviceStepBatch d, uploader_->Upload(batch, stream_));
  if (out.sampling != nullptr) RETURN_IF_ERROR(sampler_->Upload(*out.sampling, d.num_logits_rows, stream_));
  RETURN_IF_ERROR(program.BeginStep(d.num_tokens));
  RETURN_IF_ERROR(program.EnqueueStep(d, cache));
  ++counts_.eager;
  return Finish(d, d.num_logits_rows, /*unsampled=*/0, program, out);
}

absl::Status StepRunner::Finish(const DeviceStepBatch& d, int32_t rows, int32_t unsampled, StepProgram& program,
                                Output& out) {
  const int64_t V = options_.vocab_size, chunk = options_.max_seqs;
  if (out.sampling == nullptr) out.logits = Tensor::Empty(DType::kF32, {rows, V});  // [S', V]
  // EnqueueStep ran the head for the first `chunk` rows; later rows take it in turns.
  for (int32_t first = 0; first < rows; first += chunk) {
    const int32_t n = static_cast<int32_t>(std::min<int64_t>(chunk, rows - first));
    if (first > 0) RETURN_IF_ERROR(program.EnqueueHead(d, first, n));
    float* logits = program.logits().data<float>();
    if (out.sampling == nullptr) {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.logits.data<float>() + first * V, logits, n * V * sizeof(float),
                                           cudaMemcpyDeviceToHost, stream_));
    } else if (first + n > unsampled) {
      const int32_t from = std::max(first, unsampled);
      sampler_->Enqueue(logits + (from - first) * V, from, first + n - from, stream_);
    }
  }
  if (out.sampling != nullptr) RETURN_IF_ERROR(sampler_->EnqueueReadback(*out.sampling, stream_));
  RETURN_IF_ERROR(program.EnqueueReadback());
  RETURN_IF_ERROR(program.WaitForStream(stream_));
  program.EndStep();
  if (out.sampling != nullptr) sampler_->Read(*out.sampling, out.samples);
  return absl::OkStatus();
}

absl::Status StepRunner::DecodeWithGraph(const StepBatch& batch, const DeviceKvCache& cache, StepProgram& program,
                                         Output& out) {
  const int32_t largest = std::min({options_.max_graph_batch, options_.max_seqs, options_.max_tokens});
  const int32_t size = std::max(std::min(PowerOfTwoAtLeast(batch.num_seqs()), largest), batch.num_seqs());
  const StepBatch padded = PadDecodeBatch(batch, size, uploader_->capacity().max_blocks_per_seq,
                                          cache.scratch_block(), cache.shape().block_size);
  ASSIGN_OR_RETURN(DeviceStepBatch d, uploader_->Upload(padded, stream_));
  // The padding rows are sampled too (greedy) and dropped: the graph samples `size` rows.
  if (out.sampling != nullptr) RETURN_IF_ERROR(sampler_->Upload(*out.sampling, size, stream_));
  // The decode kernel's grid follows the longest context: bucket it by powers of two (at
  // least 512, at most what the cache holds) so a graph serves many steps. Only the grid
  // depends on it; each sequence still reads its own context length.
  const int32_t context_cap = static_cast<int32_t>(std::min<int64_t>(
      options_.max_position_embeddings, int64_t{cache.shape().num_blocks} * cache.shape().block_size));
  d.max_context_len = std::min(std::max(PowerOfTwoAtLeast(d.max_context_len), 512), context_cap);
  RETURN_IF_ERROR(program.BeginStep(batch.num_tokens()));  // padding is not a real token
  const GraphCache::Key key{d.num_seqs, d.max_context_len};
  if (graphs_cache_ != &cache) {  // graphs write the cache they were captured with
    ClearGraphs();
    graphs_cache_ = &cache;
  }
  GraphCache& graphs = out.sampling != nullptr ? sampling_graphs_ : graphs_;
  if (GraphCache::Exec* exec = graphs.Find(key)) {
    RETURN_IF_ERROR(graphs.Launch(*exec, stream_));
    ++counts_.graph_replays;
    return Finish(d, batch.num_seqs(), /*unsampled=*/size, program, out);
  }
  // First step at this key: run it eagerly (which also warms cuBLAS up for these shapes),
  // then capture it for the next ones.
  RETURN_IF_ERROR(program.EnqueueStep(d, cache));
  ++counts_.eager;
  RETURN_IF_ERROR(Finish(d, batch.num_seqs(), /*unsampled=*/0, program, out));
  const absl::Status captured = graphs.Capture(key, stream_, [&]() -> absl::Status {
    RETURN_IF_ERROR(program.EnqueueStep(d, cache));
    if (out.sampling != nullptr) sampler_->Enqueue(program.logits().data<float>(), 0, size, stream_);
    return absl::OkStatus();
  });
  if (captured.ok()) {
    ++counts_.graph_captures;
    counts_.last_graph_kernels = graphs.last_kernel_nodes();
  } else {
    graphs_failed_ = true;
    std::fprintf(stderr, "moe: CUDA graph capture failed, decode steps run without graphs: %s\n",
                 captured.ToString().c_str());
  }
  return absl::OkStatus();
}

}  // namespace moe::cuda
