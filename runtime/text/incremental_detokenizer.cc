// Streaming detokenization with prefix/read offsets (see incremental_detokenizer.h).
#include "runtime/text/incremental_detokenizer.h"

#include <algorithm>

#include "runtime/status_macros.h"
#include "runtime/text/utf8.h"

namespace moe::text {
namespace {

bool EndsWithReplacement(const std::string& text) {
  return text.size() >= kReplacementChar.size() &&
         text.compare(text.size() - kReplacementChar.size(), kReplacementChar.size(),
                      kReplacementChar) == 0;
}

// Length of the longest common prefix of a and b that ends on a character boundary of b.
size_t CommonPrefixOnCharBoundary(const std::string& a, const std::string& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  while (n > 0 && n < b.size() && (static_cast<unsigned char>(b[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               absl::Span<const int32_t> prompt_ids,
                                               DecodeOptions options)
    : tokenizer_(tokenizer), options_(options), ids_(prompt_ids.begin(), prompt_ids.end()) {
  read_offset_ = ids_.size();
  prefix_offset_ = ids_.size() - std::min(ids_.size(), kPromptContext);
  // Do not start the context inside a character: with byte fallback a cut run of byte tokens
  // decodes to U+FFFD for every byte, even the bytes of later, whole characters.
  const absl::Span<const int32_t> ids(ids_);
  for (size_t extra = 0; extra < kMaxExtraContext && prefix_offset_ > 0; ++extra) {
    auto text =
        tokenizer_.Decode(ids.subspan(prefix_offset_, read_offset_ - prefix_offset_), options_);
    if (!text.ok() || text->compare(0, kReplacementChar.size(), kReplacementChar) != 0) break;
    --prefix_offset_;
  }
}

absl::StatusOr<std::string> IncrementalDetokenizer::Step(int32_t id) {
  ids_.push_back(id);
  return NewText(/*allow_unfinished=*/false);
}

absl::StatusOr<std::string> IncrementalDetokenizer::Finish() {
  if (read_offset_ == ids_.size()) return std::string();
  return NewText(/*allow_unfinished=*/true);
}

absl::StatusOr<std::string> IncrementalDetokenizer::NewText(bool allow_unfinished) {
  const absl::Span<const int32_t> ids(ids_);
  ASSIGN_OR_RETURN(
      std::string prefix_text,
      tokenizer_.Decode(ids.subspan(prefix_offset_, read_offset_ - prefix_offset_), options_));
  ASSIGN_OR_RETURN(std::string new_text, tokenizer_.Decode(ids.subspan(prefix_offset_), options_));
  // A long run of ids that add no text (skipped special tokens) or never finish a character
  // must not grow the window that every step decodes again.
  const bool stuck = ids_.size() - read_offset_ > kMaxUnreleasedIds;
  if (new_text.size() <= prefix_text.size()) {
    if (stuck && new_text == prefix_text) {
      prefix_offset_ = read_offset_;
      read_offset_ = ids_.size();
    }
    return std::string();
  }
  if (EndsWithReplacement(new_text) && !allow_unfinished && !stuck) return std::string();
  // Decoders normally extend the text; if one rewrote the old part, resume where the two
  // agree, on a character boundary.
  const size_t start = new_text.compare(0, prefix_text.size(), prefix_text) == 0
                           ? prefix_text.size()
                           : CommonPrefixOnCharBoundary(prefix_text, new_text);
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return new_text.substr(start);
}

}  // namespace moe::text
