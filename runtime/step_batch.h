// StepBatch: everything one forward step needs to know about its sequences, flattened.
//
// The same struct feeds the CPU and CUDA backends. Sequence s owns query tokens
// [query_starts[s], query_starts[s+1]) of the flattened arrays; after the step its KV
// cache holds context_lens[s] tokens, laid out in the blocks of block_tables row s.
// Attention always reads the paged cache: this step's K/V are first written at
// slot_mapping (slot = block * block_size + offset), then read back with the rest.
//
//   StepBatch b;                      // one sequence, prefill of 3 tokens, block size 16
//   b.token_ids = {5, 9, 2};  b.positions = {0, 1, 2};
//   b.query_starts = {0, 3};  b.context_lens = {3};
//   b.max_blocks_per_seq = 1; b.block_tables = {7};  b.slot_mapping = {112, 113, 114};
//   b.logits_rows = {2};               // sample from the last token
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace moe {

struct StepBatch {
  std::vector<int32_t> token_ids;     // [T]
  std::vector<int32_t> positions;     // [T] position of each token in its sequence
  std::vector<int32_t> query_starts;  // [S+1] prefix sums of tokens per sequence
  std::vector<int32_t> context_lens;  // [S] tokens in the cache after this step
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t> block_tables;  // [S, max_blocks_per_seq] block ids, row-major
  std::vector<int64_t> slot_mapping;  // [T] cache slot each token's K/V goes to
  std::vector<int32_t> logits_rows;   // [S'] tokens (indices into T) that need logits

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(context_lens.size()); }
  const int32_t* block_table(int32_t seq) const {
    return block_tables.data() + static_cast<int64_t>(seq) * max_blocks_per_seq;
  }
};

struct StepBatchLimits {
  int32_t vocab_size;
  int32_t num_blocks;
  int32_t block_size;
  int32_t max_context;
};

// Checks sizes and ranges so a malformed batch is an error, never an out-of-bounds access:
// token ids within the vocabulary, positions below the context length, block ids and slots
// inside the pool, every cached position covered by the block table.
absl::Status ValidateStepBatch(const StepBatch& batch, const StepBatchLimits& limits);

}  // namespace moe
