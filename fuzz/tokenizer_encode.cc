// Arbitrary bytes (valid UTF-8 or not) through the real tokenizers' Encode, and arbitrary
// ids through Decode and the incremental detokenizer's rules: an error or a result, never a
// crash. The first byte picks the tokenizer.
#include <cstring>
#include <memory>
#include <vector>

#include "fuzz/fuzz_support.h"
#include "runtime/text/tokenizer.h"

namespace {

const std::vector<std::unique_ptr<moe::text::Tokenizer>>& Tokenizers() {
  static const auto* all = [] {
    auto* out = new std::vector<std::unique_ptr<moe::text::Tokenizer>>;
    for (const char* name : {"qwen2", "llama3", "mistral", "gpt2", "metaspace"}) {
      auto t = moe::text::Tokenizer::FromDirectory(moe::fuzz::TokenizerDir(name));
      if (t.ok()) out->push_back(*std::move(t));
    }
    return out;
  }();
  return *all;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || Tokenizers().empty()) return 0;
  const moe::text::Tokenizer& tokenizer = *Tokenizers()[data[0] % Tokenizers().size()];
  const std::string text = moe::fuzz::AsString(data + 1, size - 1);
  auto ids = tokenizer.Encode(text);
  if (ids.ok()) (void)tokenizer.Decode(*ids, {.skip_special_tokens = (data[0] & 0x80) != 0});
  // The bytes as ids, in and out of the vocabulary.
  std::vector<int32_t> raw;
  for (size_t i = 1; i + 3 < size; i += 4) {
    int32_t id;
    std::memcpy(&id, data + i, sizeof(id));
    raw.push_back(id % 200000);
  }
  (void)tokenizer.Decode(raw);
  return 0;
}
