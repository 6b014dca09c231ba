// Tokenizer: Hugging Face tokenizer.json (BPE model) + tokenizer_config.json, giving the same
// ids and text as the `tokenizers` library.
//
// Encode: validate UTF-8 -> cut out added tokens (raw text) -> normalize each text segment ->
// cut out normalized added tokens -> pre-tokenize into words -> BPE each word -> add BOS/EOS.
// Decode: ids -> token strings (special ones dropped on request) -> decoder chain -> text.
//
// Byte-level (GPT-2, Llama-3, Qwen2/3) and SentencePiece-style (Mistral/Mixtral, Llama-2:
// Metaspace or Prepend+Replace, byte fallback) vocabularies are supported. Input that is not
// valid UTF-8 is rejected with InvalidArgument naming the first bad byte; decoding never
// fails on byte sequences: invalid UTF-8 in the output becomes U+FFFD, as in tokenizers.
// Encode and Decode are thread-safe.
//
//   ASSIGN_OR_RETURN(auto tok, Tokenizer::FromDirectory("/models/qwen3"));
//   ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->Encode("Hello world"));
//   ASSIGN_OR_RETURN(std::string text, tok->Decode(ids, {.skip_special_tokens = true}));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "runtime/text/added_vocabulary.h"
#include "runtime/text/bpe_model.h"
#include "runtime/text/decoder.h"
#include "runtime/text/normalizer.h"
#include "runtime/text/post_processor.h"
#include "runtime/text/pre_tokenizer.h"
#include "runtime/text/tokenizer_config.h"

namespace moe::text {

struct EncodeOptions {
  bool add_special_tokens = true;  // BOS/EOS from the post-processor / tokenizer_config.json
};

struct DecodeOptions {
  bool skip_special_tokens = false;
};

class Tokenizer {
 public:
  // Loads dir/tokenizer.json and, if present, dir/tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromDirectory(const std::string& dir);
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(const nlohmann::json& tokenizer,
                                                             TokenizerConfig config);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              EncodeOptions options = {}) const;
  // InvalidArgument for an id that is neither in the vocabulary nor an added token.
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     DecodeOptions options = {}) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The vocabulary spelling of `id` ("Ġworld", "<|im_end|>"), or nullptr.
  const std::string* IdToToken(int32_t id) const;
  bool IsSpecial(int32_t id) const;
  // One past the largest id (vocabulary and added tokens).
  int32_t vocab_size() const { return vocab_size_; }

  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  const TokenizerConfig& config() const { return config_; }

 private:
  Tokenizer() = default;
  absl::Status ApplyConfig();
  // Appends the ids of a segment with no raw-text added tokens in it.
  absl::Status EncodeSegment(std::string_view segment, bool at_input_start,
                             std::vector<int32_t>* ids) const;
  absl::Status EncodeWords(std::string text, bool at_input_start, std::vector<int32_t>* ids) const;

  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Decoder> decoder_;
  AddedVocabulary added_;
  PostProcessor post_processor_;
  TokenizerConfig config_;
  int32_t vocab_size_ = 0;
  std::optional<int32_t> bos_id_, eos_id_;
};

}  // namespace moe::text
