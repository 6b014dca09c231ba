// libFuzzer target for the tokenizer: Encode and Decode on arbitrary bytes must never crash,
// must reject exactly the inputs that are not UTF-8, must give valid UTF-8 back, and must
// round-trip text on the lossless (byte-level, no normalizer) vocabularies; the incremental
// detokenizer must only stream valid UTF-8 for arbitrary ids.
//
// Built only with -DMOE_BUILD_FUZZERS=ON and clang (see tools/text/CMakeLists.txt):
//   CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DMOE_BUILD_FUZZERS=ON -DMOE_ENABLE_CUDA=OFF
//   cmake --build build-fuzz --target tokenizer_fuzz
//   build-fuzz/bin/tokenizer_fuzz -max_total_time=600 -max_len=2048 corpus/
//
// Input layout: byte 0 picks the vocabulary, byte 1 the mode (encode text / decode ids /
// stream ids),
// the rest is the text or the ids (two bytes each, modulo the vocabulary size).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/text/incremental_detokenizer.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/utf8.h"

namespace {

using moe::text::Tokenizer;

struct Vocab {
  std::unique_ptr<Tokenizer> tokenizer;
  bool lossless;
};

std::vector<Vocab> LoadVocabularies() {
  std::vector<Vocab> vocabs;
  const std::pair<const char*, bool> names[] = {
      {"gpt2", true}, {"llama3", true}, {"qwen2", false}, {"mistral", false}, {"metaspace", false}};
  for (const auto& [name, lossless] : names) {
    auto tok = Tokenizer::FromDirectory(std::string(MOE_TOKENIZER_DATA_DIR) + "/" + name);
    if (!tok.ok()) {
      std::fprintf(stderr, "cannot load %s: %s\n", name, tok.status().ToString().c_str());
      std::abort();
    }
    vocabs.push_back({std::move(tok).value(), lossless});
  }
  return vocabs;
}

void Fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "fuzz check failed: %s (input %zu bytes)\n", what, input.size());
  std::abort();
}

bool HasAddedTokenText(const Tokenizer& tok, std::string_view text) {
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    if (!tok.IsSpecial(id) && id < tok.vocab_size() - 16) continue;  // added tokens sit at the end
    const std::string* s = tok.IdToToken(id);
    if (s != nullptr && text.find(*s) != std::string_view::npos) return true;
  }
  return false;
}

void CheckEncode(const Vocab& vocab, std::string_view text) {
  const Tokenizer& tok = *vocab.tokenizer;
  auto ids = tok.Encode(text);
  const bool valid = moe::text::ValidateUtf8(text).ok();
  if (ids.ok() != valid) Fail("Encode accepted invalid or rejected valid UTF-8", text);
  if (!ids.ok()) return;
  auto plain = tok.Encode(text, {.add_special_tokens = false});
  if (!plain.ok()) Fail("Encode without special tokens failed", text);
  auto back = tok.Decode(*plain);
  if (!back.ok()) Fail("Decode of an encoding failed", text);
  if (!moe::text::ValidateUtf8(*back).ok()) Fail("Decode gave invalid UTF-8", text);
  if (vocab.lossless && *back != text && !HasAddedTokenText(tok, text)) {
    Fail("lossless round trip changed the text", text);
  }
}

std::vector<int32_t> IdsFromBytes(const Tokenizer& tok, std::string_view bytes) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    const int v =
        static_cast<unsigned char>(bytes[i]) << 8 | static_cast<unsigned char>(bytes[i + 1]);
    ids.push_back(v % tok.vocab_size());
  }
  return ids;
}

void CheckStream(const Vocab& vocab, std::string_view bytes) {
  const Tokenizer& tok = *vocab.tokenizer;
  const std::vector<int32_t> ids = IdsFromBytes(tok, bytes);
  const size_t prompt = ids.size() / 3;
  moe::text::IncrementalDetokenizer detok(tok, absl::MakeConstSpan(ids).subspan(0, prompt));
  for (size_t i = prompt; i < ids.size(); ++i) {
    auto delta = detok.Step(ids[i]);
    if (!delta.ok()) return;  // a hole in the id space
    if (!moe::text::ValidateUtf8(*delta).ok()) Fail("a streamed delta is not UTF-8", bytes);
  }
  auto rest = detok.Finish();
  if (rest.ok() && !moe::text::ValidateUtf8(*rest).ok()) Fail("Finish() is not UTF-8", bytes);
}

void CheckDecode(const Vocab& vocab, std::string_view bytes) {
  const Tokenizer& tok = *vocab.tokenizer;
  const std::vector<int32_t> ids = IdsFromBytes(tok, bytes);
  for (bool skip : {false, true}) {
    auto text = tok.Decode(ids, {.skip_special_tokens = skip});
    if (!text.ok()) continue;  // a hole in the id space: a clear error is fine
    if (!moe::text::ValidateUtf8(*text).ok()) Fail("Decode gave invalid UTF-8", bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Vocab> vocabs = LoadVocabularies();
  if (size < 2) return 0;
  const Vocab& vocab = vocabs[data[0] % vocabs.size()];
  const std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);
  if (data[1] % 4 == 0) {
    CheckDecode(vocab, rest);
  } else if (data[1] % 4 == 1) {
    CheckStream(vocab, rest);
  } else {
    CheckEncode(vocab, rest);
  }
  return 0;
}
