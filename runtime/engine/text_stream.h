// TextStream: incremental detokenization as the engine needs it, one token at a time.
//
// The engine asks a factory for one stream per sequence; a stream returns only complete
// UTF-8 text. runtime/text's incremental detokenizer implements it for real tokenizers;
// without a tokenizer the engine streams token ids only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace moe {

class TextStream {
 public:
  virtual ~TextStream() = default;
  // The text that `token` completes (possibly empty while a character is incomplete).
  virtual std::string Append(int32_t token) = 0;
};

using TextStreamFactory = std::function<std::unique_ptr<TextStream>()>;

}  // namespace moe
