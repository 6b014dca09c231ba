#include "runtime/step_batch.h"

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("invalid step batch: ", what));
}

}  // namespace

absl::Status ValidateStepBatch(const StepBatch& b, const StepBatchLimits& limits) {
  const int64_t T = b.token_ids.size();
  const int64_t S = b.context_lens.size();
  if (b.positions.size() != static_cast<size_t>(T) || b.slot_mapping.size() != static_cast<size_t>(T)) {
    return Bad(absl::StrCat(T, " tokens but ", b.positions.size(), " positions and ",
                            b.slot_mapping.size(), " slots"));
  }
  if (b.query_starts.size() != static_cast<size_t>(S + 1) || b.query_starts.front() != 0 ||
      b.query_starts.back() != T) {
    return Bad(absl::StrCat("query_starts must have ", S + 1, " entries from 0 to ", T));
  }
  for (int64_t s = 0; s < S; ++s) {
    if (b.query_starts[s] > b.query_starts[s + 1]) {
      return Bad(absl::StrCat("query_starts decrease at sequence ", s));
    }
  }
  if (limits.block_size <= 0 || limits.num_blocks <= 0) return Bad("the KV pool is empty");
  if (b.max_blocks_per_seq <= 0 ||
      b.block_tables.size() != static_cast<size_t>(S * b.max_blocks_per_seq)) {
    return Bad(absl::StrCat("block_tables must be [", S, ", max_blocks_per_seq > 0]"));
  }
  const int64_t num_slots = static_cast<int64_t>(limits.num_blocks) * limits.block_size;
  for (int64_t s = 0; s < S; ++s) {
    const int32_t begin = b.query_starts[s], end = b.query_starts[s + 1];
    const int32_t ctx = b.context_lens[s];
    if (ctx <= 0 || ctx > limits.max_context) {
      return Bad(absl::StrCat("sequence ", s, " has context length ", ctx, ", expected 1..",
                              limits.max_context));
    }
    const int64_t blocks_needed = (ctx + limits.block_size - 1) / limits.block_size;
    if (blocks_needed > b.max_blocks_per_seq) {
      return Bad(absl::StrCat("sequence ", s, " needs ", blocks_needed, " blocks, table has ",
                              b.max_blocks_per_seq));
    }
    for (int64_t i = 0; i < blocks_needed; ++i) {
      const int32_t block = b.block_table(s)[i];
      if (block < 0 || block >= limits.num_blocks) {
        return Bad(absl::StrCat("sequence ", s, " block ", i, " is ", block, ", pool has ",
                                limits.num_blocks));
      }
    }
    for (int32_t t = begin; t < end; ++t) {
      if (b.token_ids[t] < 0 || b.token_ids[t] >= limits.vocab_size) {
        return Bad(absl::StrCat("token ", t, " has id ", b.token_ids[t], ", vocabulary is ",
                                limits.vocab_size));
      }
      if (b.positions[t] < 0 || b.positions[t] >= ctx) {
        return Bad(absl::StrCat("token ", t, " at position ", b.positions[t],
                                " outside its context of ", ctx));
      }
      const int64_t slot = b.slot_mapping[t];
      const int32_t block = b.block_table(s)[b.positions[t] / limits.block_size];
      if (slot != static_cast<int64_t>(block) * limits.block_size + b.positions[t] % limits.block_size) {
        return Bad(absl::StrCat("token ", t, " has slot ", slot,
                                ", which is not where its block table puts position ",
                                b.positions[t]));
      }
      if (slot < 0 || slot >= num_slots) return Bad(absl::StrCat("slot ", slot, " out of range"));
    }
  }
  for (int32_t row : b.logits_rows) {
    if (row < 0 || row >= T) return Bad(absl::StrCat("logits row ", row, " out of range"));
  }
  return absl::OkStatus();
}

}  // namespace moe
