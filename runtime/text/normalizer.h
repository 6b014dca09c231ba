// Normalizers from tokenizer.json: rewrite text before it is cut into words.
//
// Supported types: NFC (ICU), Prepend, Replace (string or regex pattern), Sequence. Any other
// type fails to load with a message naming it.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<Normalizer> n, MakeNormalizer(json["normalizer"]));
//   if (n) n->Normalize(&segment);   // "hi you" -> "▁hi▁you" for Prepend("▁") + Replace(" ")
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Rewrites `text` (valid UTF-8) in place.
  virtual void Normalize(std::string* text) const = 0;
};

// nullptr for a JSON null (no normalizer).
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& spec);

// Replaces every occurrence of `from` (non-empty) in `text` with `to`.
void ReplaceAll(std::string_view from, std::string_view to, std::string* text);

}  // namespace moe::text
