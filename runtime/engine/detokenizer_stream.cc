#include "runtime/engine/detokenizer_stream.h"

namespace moe {

namespace {

// The prompt ids the tokenizer can spell (a model vocabulary may be padded past it).
std::vector<int32_t> Spellable(const text::Tokenizer& tokenizer, absl::Span<const int32_t> ids) {
  std::vector<int32_t> out;
  for (int32_t id : ids) {
    if (tokenizer.IdToToken(id) != nullptr) out.push_back(id);
  }
  return out;
}

}  // namespace

DetokenizerStream::DetokenizerStream(const text::Tokenizer& tokenizer,
                                     absl::Span<const int32_t> prompt, bool skip_special_tokens)
    : tokenizer_(tokenizer),
      detokenizer_(tokenizer, Spellable(tokenizer, prompt), {.skip_special_tokens = skip_special_tokens}) {}

std::string DetokenizerStream::Append(int32_t token) {
  if (tokenizer_.IdToToken(token) == nullptr) return "";  // never let it poison the window
  absl::StatusOr<std::string> delta = detokenizer_.Step(token);
  return delta.ok() ? *std::move(delta) : std::string();
}

std::string DetokenizerStream::Finish() {
  absl::StatusOr<std::string> rest = detokenizer_.Finish();
  return rest.ok() ? *std::move(rest) : std::string();
}

TextStreamFactory DetokenizerStreams(const text::Tokenizer& tokenizer) {
  return [&tokenizer](const Request& request) {
    return std::make_unique<DetokenizerStream>(tokenizer, request.prompt, request.skip_special_tokens);
  };
}

}  // namespace moe
