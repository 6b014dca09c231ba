// StopChecker: decides when a sequence is done and which text may be streamed.
//
// Checked after every new token, as vLLM does: max_tokens, EOS (unless ignore_eos), stop
// token ids, then stop strings on the detokenized text (a stop string completed by the last
// token still wins over max_tokens). Nothing but max_tokens stops a sequence before
// min_tokens. The text of EOS and stop tokens is not part of the output. Text that could still become the start of a stop string is held
// back, so a stop string split across tokens is found and never streamed; what is held
// back is released when the sequence finishes for another reason.
//
//   StopChecker stop(request.stopping, eos_ids, std::move(text_stream));
//   StopChecker::Step s = stop.Append(token, num_output);
//   if (!s.text.empty()) stream(s.text);   if (s.finished) finish(*s.reason);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/engine/output.h"
#include "runtime/engine/request.h"
#include "runtime/engine/text_stream.h"

namespace moe {

class StopChecker {
 public:
  StopChecker(const StoppingParams& params, std::vector<int32_t> eos_ids,
              std::unique_ptr<TextStream> text);

  struct Step {
    std::string text;                   // text that may be streamed now
    std::optional<FinishReason> finish;
    std::string matched_stop;
  };

  // `num_output` counts generated tokens including this one.
  Step Append(int32_t token, int num_output);
  // Releases held-back text when the sequence ends for a reason other than a stop string.
  std::string Flush();
  // Tokens the sampler must not pick yet (EOS and stop ids before min_tokens).
  std::vector<int32_t> MaskedTokens(int num_output) const;

 private:
  std::string Release(bool all);
  bool FindStopString(size_t old_size, Step& step);

  const StoppingParams params_;
  std::vector<int32_t> eos_ids_;
  std::unique_ptr<TextStream> text_;
  size_t max_stop_len_ = 0;
  std::string pending_;  // detokenized but not yet streamed
};

}  // namespace moe
