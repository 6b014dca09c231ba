// A .safetensors file of arbitrary bytes: Open validates it (header length, JSON, dtypes,
// shapes, offsets within the file) or says why not; it never reads out of bounds.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "fuzz/fuzz_support.h"
#include "runtime/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      std::filesystem::temp_directory_path() / ("moe_fuzz." + std::to_string(getpid()) + ".safetensors");
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto file = moe::SafetensorsFile::Open(path);
  if (file.ok()) {
    for (const std::string& name : (*file)->names()) (void)(*file)->Get(name);
  }
  return 0;
}
