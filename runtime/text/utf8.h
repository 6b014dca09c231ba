// UTF-8 helpers for the tokenizer: validation with a precise error, code point iteration, and
// the lossy decoding that Hugging Face tokenizers uses (Rust's String::from_utf8_lossy).
//
//   RETURN_IF_ERROR(ValidateUtf8(text));          // "invalid UTF-8 at byte 3 (0xff)"
//   std::string shown = Utf8Lossy(bytes);         // each maximal bad subpart -> U+FFFD
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace moe::text {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// OK if `text` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF);
// otherwise InvalidArgument naming the byte offset and value of the first bad byte.
absl::Status ValidateUtf8(std::string_view text);

// Length in bytes of the well-formed UTF-8 sequence that starts at text[pos], or 0 if the
// bytes there are not one.
size_t ValidSequenceLength(std::string_view text, size_t pos);

// Length of the UTF-8 character that starts at text[pos] in text known to be valid.
inline size_t CharLength(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Decodes the valid character at text[pos] (text must be valid UTF-8 there).
char32_t DecodeChar(std::string_view text, size_t pos);

void AppendUtf8(char32_t code_point, std::string* out);

// `bytes` with each maximal ill-formed subpart replaced by U+FFFD (the Unicode and WHATWG
// "maximal subpart" practice, as Rust's String::from_utf8_lossy does).
std::string Utf8Lossy(std::string_view bytes);

// True if `text` ends with an incomplete (but so far well-formed) multi-byte sequence.
bool EndsWithIncompleteChar(std::string_view text);

}  // namespace moe::text
