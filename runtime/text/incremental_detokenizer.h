// IncrementalDetokenizer: turns the token ids of a generation, one at a time, into text deltas
// for streaming. A delta is only released once it is complete UTF-8, so a multi-byte
// character whose bytes come in several tokens is never split across deltas.
//
// It keeps two offsets into the ids (as vLLM and TGI do): text from prefix_offset to
// read_offset has already been released; each step decodes [prefix_offset, end) and releases
// what it adds past the decode of [prefix_offset, read_offset) unless that ends in U+FFFD
// (an unfinished character). Decoding from a few tokens back keeps context-dependent decoders
// (SentencePiece's leading-space strip, byte fallback) right.
//
//   IncrementalDetokenizer detok(tokenizer, prompt_ids, {.skip_special_tokens = true});
//   for (int32_t id : generated) { ASSIGN_OR_RETURN(std::string delta, detok.Step(id));
//   Send(delta); } ASSIGN_OR_RETURN(std::string rest, detok.Finish());   // an unfinished character
//   -> U+FFFD
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/text/tokenizer.h"

namespace moe::text {

class IncrementalDetokenizer {
 public:
  // The prompt's text is never released; its last few ids give the first deltas context.
  IncrementalDetokenizer(const Tokenizer& tokenizer, absl::Span<const int32_t> prompt_ids,
                         DecodeOptions options = {});

  // Adds one generated id; returns the newly completed text (often empty).
  absl::StatusOr<std::string> Step(int32_t id);
  // Releases whatever is left, with an unfinished trailing character as U+FFFD.
  absl::StatusOr<std::string> Finish();

  const std::vector<int32_t>& ids() const { return ids_; }  // prompt + generated
  size_t prefix_offset() const { return prefix_offset_; }
  size_t read_offset() const { return read_offset_; }

  // How many prompt ids before the first generated one are decoded with it.
  static constexpr size_t kPromptContext = 5;
  // How many more are added, at most, so that the context does not start inside a character.
  static constexpr size_t kMaxExtraContext = 8;
  // Ids held back at most: past this, text is released even if it ends in an unfinished
  // character, and ids that add no text stop being re-decoded.
  static constexpr size_t kMaxUnreleasedIds = 16;

 private:
  // The text that ids_[prefix_offset_, end) adds past ids_[prefix_offset_, read_offset_).
  absl::StatusOr<std::string> NewText(bool allow_unfinished);

  const Tokenizer& tokenizer_;
  DecodeOptions options_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
};

}  // namespace moe::text
