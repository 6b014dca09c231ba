// Regex: a compiled PCRE2 pattern (UTF + UCP, JIT) for the pre-tokenizer splits.
//
// Hugging Face tokenizers runs Oniguruma; PCRE2 with PCRE2_UCP agrees with it on the
// pre-tokenizer patterns of GPT-2, Llama-3 and Qwen2 except that Oniguruma's \s also matches
// U+0085 (NEL), so Compile() rewrites \s and \S to include it.
//
//   ASSIGN_OR_RETURN(auto re, Regex::Compile(R"(\p{L}+|\s+)"));
//   RETURN_IF_ERROR(re->ForEachMatch(text, [&](size_t begin, size_t end) { ... }));
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace moe::text {

class Regex {
 public:
  // `pattern` in Oniguruma / Hugging Face syntax.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Calls on_match(begin, end) for each non-overlapping match, left to right; text must be
  // valid UTF-8. Empty matches are skipped.
  absl::Status ForEachMatch(std::string_view text,
                            const std::function<void(size_t, size_t)>& on_match) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

// The pattern with \s and \S widened to Oniguruma's white space (adds U+0085).
std::string OnigurumaCompatiblePattern(std::string_view pattern);

}  // namespace moe::text
