// RunGreedy: runs a fixed set of prompts to completion with greedy decoding, one StepBatch
// per step over a paged KV cache (prefill, optionally chunked, then decode steps).
//
// A test harness below the engine: it keeps the logits of every prompt position, which the
// golden and model tests compare, and hands out blocks from a free list in descending
// order, so a sequence's blocks are never contiguous or in order, which is what the paged
// kernels must handle.
//
//   ASSIGN_OR_RETURN(GreedyOutput out, RunGreedy(model, {{1, 2, 3}}, {.max_new_tokens = 16}));
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/dist/communicator.h"
#include "runtime/model.h"

namespace moe {

struct GreedyOptions {
  int max_new_tokens = 16;
  int block_size = 16;
  int prefill_chunk = 0;            // prompt tokens per sequence per step; 0 = all at once
  bool stop_at_eos = false;         // stop a sequence at any of the model's EOS ids
  bool keep_prompt_logits = false;  // return the logits of every prompt position
  bool keep_step_logits = false;    // return the logits that chose each new token
  // Teacher forcing: per prompt, the tokens to append instead of the argmax (each at least
  // max_new_tokens long), so that two models can be compared step by step on the same
  // sequence. The argmax is still recorded.
  const std::vector<std::vector<int32_t>>* forced_tokens = nullptr;
  // Expert parallelism: the ranks of this group run RunGreedy together, each over its own
  // prompts; a rank whose prompts are done (or that has none) joins the others' steps with
  // Model::ForwardIdle until every rank is done.
  dist::Communicator* group = nullptr;
  // Called after each step's Forward with the step and, for each of its sequences, the
  // index of the prompt it continues (to map what a model saw per token to positions).
  std::function<void(const StepBatch& batch, const std::vector<int32_t>& prompt_of_seq)> after_step;
};

struct GreedyResult {
  std::vector<int32_t> tokens;                     // [N] appended ids (the argmax unless forced)
  std::vector<int32_t> argmax;                     // [N] the argmax at each step
  std::vector<std::vector<float>> prompt_logits;   // [P][vocab] if kept
  std::vector<std::vector<float>> step_logits;     // [N][vocab] if kept
};

// Wall time split into steps that carried prompt tokens and pure decode steps.
struct GreedyTimings {
  double prefill_seconds = 0;
  double decode_seconds = 0;
  int64_t decode_steps = 0;
  int64_t decode_tokens = 0;
};

struct GreedyOutput {
  std::vector<GreedyResult> sequences;  // in prompt order
  GreedyTimings timings;
};

absl::StatusOr<GreedyOutput> RunGreedy(
    Model& model, const std::vector<std::vector<int32_t>>& prompts, const GreedyOptions& options);

}  // namespace moe
