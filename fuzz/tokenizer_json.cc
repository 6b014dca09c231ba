// tokenizer.json text: loaded or refused; a tokenizer that loads encodes and decodes a
// fixed text.
#include "fuzz/fuzz_support.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto tokenizer = moe::text::Tokenizer::FromJson(j, {});
  if (!tokenizer.ok()) return 0;
  auto ids = (*tokenizer)->Encode("Hello, world! 123 héllo\n\t  end");
  if (ids.ok()) (void)(*tokenizer)->Decode(*ids);
  return 0;
}
