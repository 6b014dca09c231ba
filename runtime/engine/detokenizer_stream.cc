#include "runtime/engine/detokenizer_stream.h"

namespace moe {

DetokenizerStream::DetokenizerStream(const text::Tokenizer& tokenizer,
                                     absl::Span<const int32_t> prompt, bool skip_special_tokens)
    : detokenizer_(tokenizer, prompt, {.skip_special_tokens = skip_special_tokens}) {}

std::string DetokenizerStream::Append(int32_t token) {
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
