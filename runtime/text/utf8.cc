// UTF-8 validation and lossy decoding (see utf8.h).
#include "runtime/text/utf8.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moe::text {
namespace {

// The range of valid second bytes after `lead` (Unicode Table 3-7), or {1, 0} if `lead` can
// not start a sequence.
struct ByteRange {
  unsigned char lo, hi;
};
ByteRange SecondByteRange(unsigned char lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return {0x80, 0xBF};
  if (lead == 0xE0) return {0xA0, 0xBF};
  if (lead == 0xED) return {0x80, 0x9F};
  if (lead >= 0xE1 && lead <= 0xEF) return {0x80, 0xBF};
  if (lead == 0xF0) return {0x90, 0xBF};
  if (lead >= 0xF1 && lead <= 0xF3) return {0x80, 0xBF};
  if (lead == 0xF4) return {0x80, 0x8F};
  return {1, 0};
}

// How many bytes from `pos` form a well-formed prefix of a sequence (1 for a bad lead byte),
// and whether that prefix is a whole character.
struct Prefix {
  size_t length;
  bool complete;
};
Prefix ScanSequence(std::string_view text, size_t pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) return {1, true};
  const ByteRange second = SecondByteRange(lead);
  if (second.lo > second.hi) return {1, false};
  const size_t need = CharLength(lead);
  size_t n = 1;
  while (n < need && pos + n < text.size()) {
    const auto b = static_cast<unsigned char>(text[pos + n]);
    const bool ok = n == 1 ? (b >= second.lo && b <= second.hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++n;
  }
  return {n, n == need};
}

}  // namespace

size_t ValidSequenceLength(std::string_view text, size_t pos) {
  const Prefix p = ScanSequence(text, pos);
  return p.complete ? p.length : 0;
}

absl::Status ValidateUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // Fast path over ASCII.
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const Prefix p = ScanSequence(text, pos);
    if (!p.complete) {
      const size_t bad = p.length == 1 ? pos : pos + p.length;
      const std::string what =
          bad < text.size() ? absl::StrFormat("0x%02x", static_cast<unsigned char>(text[bad]))
                            : std::string("end of text inside a multi-byte character");
      return absl::InvalidArgumentError(
          absl::StrCat("invalid UTF-8 at byte ", bad, " (", what, "); text must be valid UTF-8"));
    }
    pos += p.length;
  }
  return absl::OkStatus();
}

char32_t DecodeChar(std::string_view text, size_t pos) {
  const auto lead = static_cast<unsigned char>(text[pos]);
  const size_t n = CharLength(lead);
  if (n == 1) return lead;
  char32_t cp = lead & (0x7F >> n);
  for (size_t i = 1; i < n; ++i)
    cp = (cp << 6) | (static_cast<unsigned char>(text[pos + i]) & 0x3F);
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string Utf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const Prefix p = ScanSequence(bytes, pos);
    if (p.complete) {
      out.append(bytes.substr(pos, p.length));
    } else {
      out.append(kReplacementChar);
    }
    pos += p.length;
  }
  return out;
}

bool EndsWithIncompleteChar(std::string_view text) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  for (size_t back = 1; back <= 3 && back <= text.size(); ++back) {
    const size_t pos = text.size() - back;
    const auto b = static_cast<unsigned char>(text[pos]);
    if (b < 0x80) return false;
    if (b >= 0xC0) {
      const Prefix p = ScanSequence(text, pos);
      return !p.complete && pos + p.length == text.size();
    }
  }
  return false;
}

}  // namespace moe::text
