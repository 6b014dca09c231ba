// What the fuzz targets share: the input as a string, and, for the targets that parse
// requests, a tiny random model with the committed Qwen2 tokenizer, made once per process.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "server/serving_model.h"

namespace moe::fuzz {

inline std::string AsString(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

// tests/data/tokenizers/<name> (MOE_SOURCE_DIR, or the directory the build was made from).
std::string TokenizerDir(const std::string& name);

// Loaded on first use; aborts if it cannot be (the fuzzer cannot run without it).
const server::ServingModel& TinyServingModel();

}  // namespace moe::fuzz
