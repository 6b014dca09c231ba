#include "tests/sequence_runner.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "runtime/status_macros.h"

namespace moe {
namespace {

struct Sequence {
  std::vector<int32_t> tokens;  // prompt, then generated
  int32_t prompt_len = 0;
  int32_t cached = 0;           // tokens whose K/V are in the cache
  std::vector<int32_t> blocks;
  bool done = false;
};

int32_t ArgMax(const float* row, int64_t n) {
  return static_cast<int32_t>(std::max_element(row, row + n) - row);
}

}  // namespace

absl::StatusOr<GreedyOutput> RunGreedy(
    Model& model, const std::vector<std::vector<int32_t>>& prompts, const GreedyOptions& options) {
  const ModelInfo& info = model.info();
  const int32_t bs = options.block_size;
  if (options.max_new_tokens < 1) return absl::InvalidArgumentError("max_new_tokens must be >= 1");
  if (options.forced_tokens != nullptr) {
    if (options.forced_tokens->size() != prompts.size()) {
      return absl::InvalidArgumentError("forced_tokens needs one list per prompt");
    }
    for (const std::vector<int32_t>& forced : *options.forced_tokens) {
      if (static_cast<int>(forced.size()) < options.max_new_tokens) {
        return absl::InvalidArgumentError("forced_tokens must hold max_new_tokens tokens per prompt");
      }
    }
  }
  std::vector<Sequence> seqs(prompts.size());
  int64_t total_blocks = 0;
  int32_t max_blocks_per_seq = 1;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " is empty"));
    const int64_t len = prompts[i].size() + options.max_new_tokens;
    if (len > info.max_context) {
      return absl::InvalidArgumentError(absl::StrCat("prompt ", i, " plus ", options.max_new_tokens,
                                                     " new tokens exceeds the context of ",
                                                     info.max_context));
    }
    seqs[i].tokens = prompts[i];
    seqs[i].prompt_len = static_cast<int32_t>(prompts[i].size());
    const int32_t blocks = static_cast<int32_t>((len + bs - 1) / bs);
    total_blocks += blocks;
    max_blocks_per_seq = std::max(max_blocks_per_seq, blocks);
  }
  ASSIGN_OR_RETURN(KvCache kv, model.CreateKvCache({.num_layers = info.num_layers,
                                                .num_blocks = static_cast<int>(std::max<int64_t>(total_blocks, 1)),
                                                .block_size = bs,
                                                .num_kv_heads = info.num_kv_heads,
                                                .head_dim = info.head_dim}));
  std::vector<int32_t> free_blocks(total_blocks);
  std::iota(free_blocks.begin(), free_blocks.end(), 0);  // popped from the back: descending

  GreedyOutput output;
  std::vector<GreedyResult>& results = output.sequences;
  results.resize(prompts.size());
  while (true) {
    bool has_prompt_tokens = false;
    StepBatch batch;
    batch.max_blocks_per_seq = max_blocks_per_seq;
    batch.query_starts.push_back(0);
    std::vector<int32_t> batch_seq;       // sequence index of each batch entry
    std::vector<int32_t> logits_owner;    // sequence index of each logits row
    for (size_t i = 0; i < seqs.size(); ++i) {
      Sequence& seq = seqs[i];
      if (seq.done) continue;
      const int32_t remaining = static_cast<int32_t>(seq.tokens.size()) - seq.cached;
      const bool prefill = seq.cached < seq.prompt_len;
      has_prompt_tokens |= prefill;
      const int32_t n = prefill && options.prefill_chunk > 0 ? std::min(options.prefill_chunk, remaining) : remaining;
      const int32_t new_len = seq.cached + n;
      while (static_cast<int32_t>(seq.blocks.size()) * bs < new_len) {
        seq.blocks.push_back(free_blocks.back());
        free_blocks.pop_back();
      }
      for (int32_t p = seq.cached; p < new_len; ++p) {
        const int32_t row = batch.num_tokens();
        batch.token_ids.push_back(seq.tokens[p]);
        batch.positions.push_back(p);
        batch.slot_mapping.push_back(int64_t{seq.blocks[p / bs]} * bs + p % bs);
        const bool last = p == new_len - 1 && new_len >= seq.prompt_len;
        const bool keep_prompt = options.keep_prompt_logits && p < seq.prompt_len;
        if (last || keep_prompt) {
          batch.logits_rows.push_back(row);
          logits_owner.push_back(static_cast<int32_t>(i));
        }
      }
      batch.query_starts.push_back(batch.num_tokens());
      batch.context_lens.push_back(new_len);
      std::vector<int32_t> table(max_blocks_per_seq, 0);
      std::copy(seq.blocks.begin(), seq.blocks.end(), table.begin());
      batch.block_tables.insert(batch.block_tables.end(), table.begin(), table.end());
      batch_seq.push_back(static_cast<int32_t>(i));
      seq.cached = new_len;
    }
    if (options.group != nullptr) {
      std::vector<int64_t> any = {batch_seq.empty() ? 0 : 1};
      RETURN_IF_ERROR(options.group->AllReduce(absl::MakeSpan(any), dist::ReduceOp::kMax));
      if (any[0] == 0) break;
      if (batch_seq.empty()) {
        RETURN_IF_ERROR(model.ForwardIdle());
        continue;
      }
    }
    if (batch_seq.empty()) break;

    const absl::Time start = absl::Now();
    ASSIGN_OR_RETURN(Tensor logits, model.Forward(batch, kv));  // [S', vocab]
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (options.after_step) options.after_step(batch, batch_seq);
    if (has_prompt_tokens) {
      output.timings.prefill_seconds += seconds;
    } else {
      output.timings.decode_seconds += seconds;
      output.timings.decode_steps += 1;
      output.timings.decode_tokens += batch.num_tokens();
    }
    const int64_t V = logits.dim(1);
    for (size_t r = 0; r < logits_owner.size(); ++r) {
      const float* row = logits.Row<float>(r);
      Sequence& seq = seqs[logits_owner[r]];
      GreedyResult& result = results[logits_owner[r]];
      const int32_t token_pos = batch.positions[batch.logits_rows[r]];
      if (options.keep_prompt_logits && token_pos < seq.prompt_len) {
        result.prompt_logits.emplace_back(row, row + V);
      }
      if (token_pos != static_cast<int32_t>(seq.tokens.size()) - 1) continue;  // not sampling
      const int32_t argmax = ArgMax(row, V);
      const int32_t next =
          options.forced_tokens != nullptr
              ? (*options.forced_tokens)[logits_owner[r]][result.tokens.size()]
              : argmax;
      seq.tokens.push_back(next);
      result.tokens.push_back(next);
      result.argmax.push_back(argmax);
      if (options.keep_step_logits) result.step_logits.emplace_back(row, row + V);
      const bool eos = options.stop_at_eos && std::find(info.eos_token_ids.begin(),
                                                        info.eos_token_ids.end(), next) !=
                                                  info.eos_token_ids.end();
      if (eos || static_cast<int>(result.tokens.size()) >= options.max_new_tokens) seq.done = true;
    }
  }
  return output;
}

}  // namespace moe
