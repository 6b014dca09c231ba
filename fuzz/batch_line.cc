// A line of moe-batch's input: ParseBatchLine accepts it (either form) or names the field.
#include "fuzz/fuzz_support.h"
#include "tools/batch_line.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string custom_id;
  (void)moe::batch::ParseBatchLine(moe::fuzz::AsString(data, size), "model", moe::fuzz::TinyServingModel(),
                                   &custom_id);
  return 0;
}
