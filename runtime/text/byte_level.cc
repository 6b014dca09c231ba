// GPT-2's bytes_to_unicode table and its inverse (see byte_level.h).
#include "runtime/text/byte_level.h"

#include <array>

#include "runtime/text/utf8.h"

namespace moe::text {
namespace {

// Printable Latin-1 bytes stand for themselves; the rest map to U+0100.. in byte order.
struct Tables {
  std::array<char32_t, 256> to_char;
  std::array<int, 512> to_byte;  // indexed by code point (all are < 0x144), -1 if none
};

const Tables& GetTables() {
  static const Tables tables = [] {
    Tables t;
    t.to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t.to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      t.to_byte[t.to_char[b]] = b;
    }
    return t;
  }();
  return tables;
}

}  // namespace

char32_t ByteLevelChar(unsigned char b) { return GetTables().to_char[b]; }

std::optional<std::string> ByteLevelToBytes(std::string_view shown) {
  const Tables& t = GetTables();
  std::string out;
  out.reserve(shown.size());
  size_t pos = 0;
  while (pos < shown.size()) {
    const size_t n = ValidSequenceLength(shown, pos);
    if (n == 0) return std::nullopt;
    const char32_t cp = DecodeChar(shown, pos);
    if (cp >= t.to_byte.size() || t.to_byte[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(t.to_byte[cp]));
    pos += n;
  }
  return out;
}

std::string BytesToByteLevel(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendUtf8(GetTables().to_char[b], &out);
  return out;
}

}  // namespace moe::text
