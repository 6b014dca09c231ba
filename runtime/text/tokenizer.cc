// Tokenizer (see tokenizer.h).
#include "runtime/text/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/text/utf8.h"

namespace moe::text {

using json = nlohmann::json;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromDirectory(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  json tokenizer = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (tokenizer.is_discarded()) return absl::InvalidArgumentError(path + " is not JSON");
  TokenizerConfig config;
  const std::string config_path = dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    ASSIGN_OR_RETURN(config, TokenizerConfig::FromFile(config_path));
  }
  auto tok = FromJson(tokenizer, std::move(config));
  if (!tok.ok()) {
    return absl::Status(tok.status().code(), absl::StrCat(path, ": ", tok.status().message()));
  }
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(const json& tokenizer,
                                                               TokenizerConfig config) {
  if (!tokenizer.is_object() || !tokenizer.contains("model")) {
    return absl::InvalidArgumentError("tokenizer.json has no \"model\"");
  }
  for (const char* key : {"truncation", "padding"}) {
    if (tokenizer.contains(key) && !tokenizer[key].is_null()) {
      return absl::UnimplementedError(
          absl::StrCat("tokenizer.json \"", key, "\" is not supported (expected null)"));
    }
  }
  auto tok = std::unique_ptr<Tokenizer>(new Tokenizer());
  const json null;
  ASSIGN_OR_RETURN(tok->normalizer_, MakeNormalizer(tokenizer.value("normalizer", null)));
  ASSIGN_OR_RETURN(tok->pre_tokenizer_, MakePreTokenizer(tokenizer.value("pre_tokenizer", null)));
  const bool byte_level = tok->pre_tokenizer_ != nullptr && tok->pre_tokenizer_->byte_level();
  ASSIGN_OR_RETURN(tok->model_, BpeModel::FromJson(tokenizer["model"], byte_level));
  ASSIGN_OR_RETURN(tok->decoder_, MakeDecoder(tokenizer.value("decoder", null)));
  ASSIGN_OR_RETURN(tok->added_,
                   AddedVocabulary::FromJson(tokenizer.value("added_tokens", json::array())));
  ASSIGN_OR_RETURN(tok->post_processor_,
                   MakePostProcessor(tokenizer.value("post_processor", null)));
  tok->vocab_size_ = tok->model_->size();
  for (const AddedToken& t : tok->added_.tokens()) {
    tok->vocab_size_ = std::max(tok->vocab_size_, t.id + 1);
  }
  tok->config_ = std::move(config);
  RETURN_IF_ERROR(tok->ApplyConfig());
  return tok;
}

// BOS/EOS ids from tokenizer_config.json; an explicit add_bos_token / add_eos_token decides
// that side of the post-processor's template, as transformers' Llama tokenizers do.
absl::Status Tokenizer::ApplyConfig() {
  auto lookup = [this](const std::optional<std::string>& token,
                       const char* what) -> absl::StatusOr<std::optional<int32_t>> {
    if (!token) return std::nullopt;
    std::optional<int32_t> id = TokenToId(*token);
    if (!id) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer_config.json ", what, " '", *token, "' is not in the vocabulary"));
    }
    return id;
  };
  ASSIGN_OR_RETURN(bos_id_, lookup(config_.bos_token, "bos_token"));
  ASSIGN_OR_RETURN(eos_id_, lookup(config_.eos_token, "eos_token"));
  if (config_.add_bos_token.value_or(false) && !bos_id_) {
    return absl::InvalidArgumentError("add_bos_token is true but there is no bos_token");
  }
  if (config_.add_eos_token.value_or(false) && !eos_id_) {
    return absl::InvalidArgumentError("add_eos_token is true but there is no eos_token");
  }
  // Each flag the config sets replaces its side of the template; the other side stays.
  if (config_.add_bos_token) {
    post_processor_.before.clear();
    if (*config_.add_bos_token) post_processor_.before = {*bos_id_};
  }
  if (config_.add_eos_token) {
    post_processor_.after.clear();
    if (*config_.add_eos_token) post_processor_.after = {*eos_id_};
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text,
                                                       EncodeOptions options) const {
  RETURN_IF_ERROR(ValidateUtf8(text));
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (options.add_special_tokens) {
    ids.insert(ids.end(), post_processor_.before.begin(), post_processor_.before.end());
  }
  for (const Segment& s : added_.Split(text, /*normalized=*/false)) {
    if (s.token_id >= 0) {
      ids.push_back(s.token_id);
      continue;
    }
    RETURN_IF_ERROR(EncodeSegment(text.substr(s.begin, s.end - s.begin), s.begin == 0, &ids));
  }
  if (options.add_special_tokens) {
    ids.insert(ids.end(), post_processor_.after.begin(), post_processor_.after.end());
  }
  return ids;
}

absl::Status Tokenizer::EncodeSegment(std::string_view segment, bool at_input_start,
                                      std::vector<int32_t>* ids) const {
  std::string text(segment);
  if (normalizer_) normalizer_->Normalize(&text);
  if (!added_.has_normalized_tokens()) return EncodeWords(std::move(text), at_input_start, ids);
  for (const Segment& s : added_.Split(text, /*normalized=*/true)) {
    if (s.token_id >= 0) {
      ids->push_back(s.token_id);
      continue;
    }
    RETURN_IF_ERROR(
        EncodeWords(text.substr(s.begin, s.end - s.begin), at_input_start && s.begin == 0, ids));
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::EncodeWords(std::string text, bool at_input_start,
                                    std::vector<int32_t>* ids) const {
  Words words;
  words.text = std::move(text);
  words.spans = {{0, words.text.size()}};
  if (pre_tokenizer_) RETURN_IF_ERROR(pre_tokenizer_->Split(&words, at_input_start));
  for (const auto& [begin, end] : words.spans) model_->Tokenize(words.View(begin, end), ids);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int32_t> ids,
                                              DecodeOptions options) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* added = added_.FindById(id)) {
      if (!(options.skip_special_tokens && added->special)) tokens.push_back(added->content);
      continue;
    }
    const std::string* token = model_->IdToToken(id);
    if (token == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is not in the vocabulary (size ", vocab_size_, ")"));
    }
    tokens.push_back(*token);
  }
  return DecodeTokens(decoder_.get(), std::move(tokens));
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (const AddedToken* added = added_.FindByContent(token)) return added->id;
  return model_->TokenToId(token);
}

const std::string* Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* added = added_.FindById(id)) return &added->content;
  return model_->IdToToken(id);
}

bool Tokenizer::IsSpecial(int32_t id) const {
  const AddedToken* added = added_.FindById(id);
  return added != nullptr && added->special;
}

}  // namespace moe::text
