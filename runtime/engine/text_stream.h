// TextStream: incremental detokenization as the engine needs it, one token at a time.
//
// The engine asks a factory for one stream per sequence; a stream returns only complete
// UTF-8 text. DetokenizerStream (detokenizer_stream.h) implements it over a Hugging Face
// tokenizer; without a factory the engine streams token ids only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "runtime/engine/request.h"

namespace moe {

class TextStream {
 public:
  virtual ~TextStream() = default;
  // The text that `token` completes (possibly empty while a character is incomplete).
  virtual std::string Append(int32_t token) = 0;
  // At the end of the sequence: whatever is still held, an unfinished character as U+FFFD.
  virtual std::string Finish() { return ""; }
};

// Makes the stream of one sequence of `request` (its prompt gives the first tokens context).
using TextStreamFactory = std::function<std::unique_ptr<TextStream>(const Request& request)>;

}  // namespace moe
