// OpenAI request bodies: the first byte picks /v1/completions or /v1/chat/completions, the
// rest is the body. ParseOpenAiRequest turns it into engine requests (prompts encoded, chat
// rendered, every field checked) or an ApiError naming the field.
#include "fuzz/fuzz_support.h"
#include "server/openai_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const moe::server::ServingModel& serving = moe::fuzz::TinyServingModel();
  const auto endpoint = data[0] % 2 == 0 ? moe::server::Endpoint::kCompletions : moe::server::Endpoint::kChat;
  auto request = moe::server::ParseOpenAiRequest(endpoint, moe::fuzz::AsString(data + 1, size - 1), serving);
  if (!request.ok()) (void)moe::server::ErrorJson(moe::server::ApiErrorOf(request.status()));
  return 0;
}
