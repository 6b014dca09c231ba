// gRPC GenerateRequest bytes: what protobuf parses goes through BuildRequest (the proto to an
// engine request, validated, text encoded, chat rendered), which accepts or names the field.
#include "fuzz/fuzz_support.h"
#include "moe/v1/generation.pb.h"
#include "server/request_builder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  moe::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  (void)moe::server::BuildRequest(request, moe::fuzz::TinyServingModel());
  return 0;
}
