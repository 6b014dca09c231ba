// config.json text: ParseConfig accepts it or names the key that is wrong.
#include "fuzz/fuzz_support.h"
#include "moe/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)moe::ParseConfig(moe::fuzz::AsString(data, size));
  return 0;
}
