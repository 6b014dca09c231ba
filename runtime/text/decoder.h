// Decoders from tokenizer.json: turn the token strings of a list of ids back into text.
//
// Supported types: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip and Sequence,
// each with Hugging Face's semantics (ByteLevel and ByteFallback replace invalid UTF-8 with
// U+FFFD). Others fail to load with a message naming them.
//
//   ASSIGN_OR_RETURN(auto decoder, MakeDecoder(json["decoder"]));
//   std::vector<std::string> tokens = {"Hello", "Ġworld"};
//   std::string text = DecodeTokens(decoder.get(), std::move(tokens));   // "Hello world"
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe::text {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Rewrites the token strings (a step may also fuse them into fewer strings).
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
};

// nullptr for a JSON null (tokens are then joined with spaces, as in tokenizers).
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& spec);

// Runs `decoder` (may be null) and joins the result.
std::string DecodeTokens(const Decoder* decoder, std::vector<std::string> tokens);

}  // namespace moe::text
