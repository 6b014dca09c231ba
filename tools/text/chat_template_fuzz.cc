// libFuzzer target for the chat-template interpreter: parsing and rendering arbitrary
// template text must never crash, hang or overflow the stack; it either renders or returns
// an error status.
//
//   build-fuzz/bin/chat_template_fuzz -max_total_time=300 -max_len=4096 corpus/
#include <cstddef>
#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"
#include "runtime/text/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::ordered_json kMessages = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "sys"},
    {"role": "user", "content": "hi <think>x</think>"},
    {"role": "assistant", "content": "yo", "tool_calls": [{"function": {"name": "f",
      "arguments": {"a": 1}}}]},
    {"role": "tool", "content": "42"}])");
  const std::string source(reinterpret_cast<const char*>(data), size);
  auto chat =
      moe::text::ChatTemplate::Create(source, {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
  if (!chat.ok()) return 0;
  auto out = chat->Render({.messages = kMessages, .add_generation_prompt = true});
  (void)out;
  return 0;
}
