// Pre-tokenizers from tokenizer.json: cut a text segment into the words BPE runs on.
//
// Supported types: Split (string or regex pattern; Isolated, Removed, MergedWithPrevious,
// MergedWithNext, Contiguous; not inverted), ByteLevel (GPT-2 regex, add_prefix_space),
// Metaspace (prepend_scheme always/first/never, split) and Sequence. Others fail to load.
//
// ByteLevel does not rewrite bytes here: the BPE model of a byte-level tokenizer works on raw
// bytes (vocabulary entries are converted once at load time, see byte_level.h).
//
//   Words words{segment, {{0, segment.size()}}};
//   RETURN_IF_ERROR(pre_tokenizer->Split(&words, /*at_input_start=*/true));
//   for (auto [begin, end] : words.spans) model.Tokenize(words.View(begin, end), &ids);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe::text {

// A segment of text and the words cut from it, as [begin, end) byte ranges of `text`.
struct Words {
  std::string text;
  std::vector<std::pair<size_t, size_t>> spans;

  std::string_view View(size_t begin, size_t end) const {
    return std::string_view(text).substr(begin, end - begin);
  }
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Refines words->spans (and may rewrite words->text). `at_input_start` says whether the
  // segment starts at byte 0 of the caller's input (Metaspace's "first" scheme needs it).
  virtual absl::Status Split(Words* words, bool at_input_start) const = 0;
  // True if this is, or ends with, a ByteLevel step: the model then works on raw bytes.
  virtual bool byte_level() const { return false; }
};

// nullptr for a JSON null (the whole segment is one word).
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& spec);

// GPT-2's pre-tokenizer regex (ByteLevel with use_regex).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace moe::text
