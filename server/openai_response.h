// OpenAiResponse: OpenAI's response shapes for one parsed request, fed with the engine's
// deltas and finals of its choices (numbered prompt * n + choice, as OpenAI numbers them).
// It makes the chunks a stream sends and the body a plain answer returns; it knows nothing
// of transport: OpenAiCall streams or replies over HTTP, the batch tool writes bodies to a
// file.
//
//   OpenAiResponse response(request, {.id = "chatcmpl-7", .model = "qwen3", .created = now});
//   json chunk = response.AddDelta(index, delta);   // null when there is nothing to send
//   json last = response.AddFinal(index, final);
//   if (response.finished()) Write(response.Body());
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/engine/output.h"
#include "runtime/text/tokenizer.h"
#include "server/openai_request.h"

namespace moe::server {

struct OpenAiResponseOptions {
  std::string id;     // "cmpl-7", "chatcmpl-7"
  std::string model;  // the served model name
  int64_t created = 0;  // Unix seconds
  const text::Tokenizer* tokenizer = nullptr;  // nullptr: logprob tokens as "token_id:N"
};

class OpenAiResponse {
 public:
  using json = nlohmann::ordered_json;  // fields in the order OpenAI documents them

  OpenAiResponse(const OpenAiRequest& request, OpenAiResponseOptions options);

  int num_choices() const { return static_cast<int>(choices_.size()); }
  bool finished() const { return unfinished_ == 0; }

  // Streaming: the chunks that open the stream (chat: each choice's role; completions with
  // echo: each choice's prompt).
  std::vector<json> OpeningChunks() const;
  // Records a delta. When streaming, the chunk to send for it (null when it carries nothing:
  // text held back near a stop string); otherwise it is kept for the body.
  json AddDelta(int index, const OutputDelta& delta);
  // Records a final. When streaming, the choice's last chunk (finish_reason, confidence).
  json AddFinal(int index, const FinalOutput& final);

  // Once finished: the stream's usage chunk (choices [] and the usage), and the whole body.
  json UsageChunk() const;
  json Body() const;

 private:
  struct Choice {
    std::string text;
    json logprobs;            // the endpoint's shape, or null when not asked for
    int64_t text_offset = 0;  // completions logprobs: where the next token's text starts
    FinalOutput final;
  };

  json Chunk(json choices) const;
  json Usage() const;
  // The logprobs of `delta` in the endpoint's shape, appended to `into` (made if null).
  void AddLogprobs(Choice& choice, const OutputDelta& delta, json& into) const;
  std::string TokenText(int32_t id) const;

  const OpenAiRequest& request_;
  const OpenAiResponseOptions options_;
  const int n_;  // choices per prompt
  std::vector<Choice> choices_;
  int unfinished_;
};

// "stop" or "length" (a time limit is a length), as OpenAI reports why a choice ended.
const char* OpenAiFinishReason(FinishReason reason);

}  // namespace moe::server
