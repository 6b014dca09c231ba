// GPT-2's byte-level alphabet: each of the 256 byte values is shown as one printable code
// point ('Ġ' for a space), so byte-level BPE vocabularies are plain strings.
//
// The tokenizer runs BPE on raw bytes and converts vocabulary entries once at load time:
//   std::optional<std::string> raw = ByteLevelToBytes("Ġworld");   // " world"
//   std::string shown = BytesToByteLevel(" world");                // "Ġworld"
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace moe::text {

// The code point GPT-2 uses to show byte `b`.
char32_t ByteLevelChar(unsigned char b);

// The raw bytes a byte-level string stands for, or nullopt if it holds a code point outside
// the byte-level alphabet (for example an added token like "<|im start|>" with a space).
std::optional<std::string> ByteLevelToBytes(std::string_view shown);

std::string BytesToByteLevel(std::string_view bytes);

}  // namespace moe::text
