// DetokenizerStream: the engine's TextStream over a Hugging Face tokenizer, streaming only
// complete UTF-8 through runtime/text's incremental detokenizer.
//
//   EngineOptions options;
//   options.text_streams = DetokenizerStreams(*tokenizer);   // tokenizer outlives the engine
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/types/span.h"
#include "runtime/engine/text_stream.h"
#include "runtime/text/incremental_detokenizer.h"
#include "runtime/text/tokenizer.h"

namespace moe {

class DetokenizerStream final : public TextStream {
 public:
  DetokenizerStream(const text::Tokenizer& tokenizer, absl::Span<const int32_t> prompt,
                    bool skip_special_tokens);
  // Ids the tokenizer cannot spell (a model vocabulary padded past the tokenizer's) add no
  // text.
  std::string Append(int32_t token) override;
  std::string Finish() override;

 private:
  const text::Tokenizer& tokenizer_;
  text::IncrementalDetokenizer detokenizer_;
};

TextStreamFactory DetokenizerStreams(const text::Tokenizer& tokenizer);

}  // namespace moe
