// AddedVocabulary: the "added_tokens" of tokenizer.json (special tokens like <|im_start|> and
// user-added ones like <think>), which are cut out of the text before the model sees it.
//
// Matching is leftmost-longest, as Hugging Face's Aho-Corasick matcher does; lstrip / rstrip
// tokens also swallow the white space on their left / right. Tokens with normalized=false are
// matched in the raw input; normalized=true ones in each normalized text segment.
//
//   std::vector<Segment> parts = added.Split(text, /*normalized=*/false);
//   for (const Segment& s : parts) if (s.token_id >= 0) ids.push_back(s.token_id); else ...
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe::text {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;     // dropped by skip_special_tokens
  bool lstrip = false;      // also takes the white space before it
  bool rstrip = false;      // also takes the white space after it
  bool normalized = false;  // matched after normalization rather than in the raw text
};

// [begin, end) bytes of the text that was split; token_id >= 0 if the bytes are an added token.
struct Segment {
  size_t begin = 0;
  size_t end = 0;
  int32_t token_id = -1;
};

class AddedVocabulary {
 public:
  static absl::StatusOr<AddedVocabulary> FromJson(const nlohmann::json& added_tokens);

  // Cuts `text` at the tokens whose normalized flag equals `normalized`. Text segments are
  // never empty; they and the tokens cover `text` in order.
  std::vector<Segment> Split(std::string_view text, bool normalized) const;
  bool has_normalized_tokens() const { return has_normalized_; }

  const AddedToken* FindById(int32_t id) const;
  const AddedToken* FindByContent(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // The longest token (of the given kind) that starts at text[pos], or nullptr.
  const AddedToken* LongestAt(std::string_view text, size_t pos, bool normalized) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  std::vector<size_t> by_first_byte_[256];  // indices into tokens_, longest content first
  bool has_normalized_ = false;
};

// Unicode White_Space (Rust's char::is_whitespace).
bool IsUnicodeWhitespace(char32_t c);

}  // namespace moe::text
