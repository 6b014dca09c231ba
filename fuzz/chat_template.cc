// Chat templates: the first byte picks what is fuzzed. Even: the rest is a template's source,
// parsed and rendered over a fixed conversation. Odd: the rest is a conversation (JSON
// messages) rendered with the Qwen2 test tokenizer's real template. Either renders or
// returns an error; neither crashes, loops without end or recurses without bound.
#include "fuzz/fuzz_support.h"
#include "nlohmann/json.hpp"
#include "runtime/text/chat_template.h"

using nlohmann::ordered_json;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest = moe::fuzz::AsString(data + 1, size - 1);
  moe::text::ChatTemplateInputs inputs;
  inputs.add_generation_prompt = (data[0] & 2) != 0;
  if (data[0] % 2 == 0) {
    auto chat = moe::text::ChatTemplate::Create(rest, {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
    if (!chat.ok()) return 0;
    inputs.messages = ordered_json::parse(R"([{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Bye"}]}])");
    (void)chat->Render(inputs);
    return 0;
  }
  static const moe::text::ChatTemplate* qwen = [] {
    auto config = moe::text::TokenizerConfig::FromFile(moe::fuzz::TokenizerDir("qwen2") + "/tokenizer_config.json");
    if (!config.ok()) return static_cast<moe::text::ChatTemplate*>(nullptr);
    auto chat = moe::text::ChatTemplate::FromConfig(*config);
    return chat.ok() ? new moe::text::ChatTemplate(*std::move(chat)) : nullptr;
  }();
  if (qwen == nullptr) return 0;
  const ordered_json messages = ordered_json::parse(rest, nullptr, /*allow_exceptions=*/false);
  if (messages.is_discarded()) return 0;
  inputs.messages = messages;
  (void)qwen->Render(inputs);
  return 0;
}
