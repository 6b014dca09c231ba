// Added-token matching (see added_vocabulary.h).
#include "runtime/text/added_vocabulary.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/text/token_id.h"
#include "runtime/text/utf8.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

// Start of the UTF-8 character that ends just before `pos`.
size_t PrevCharStart(std::string_view text, size_t pos) {
  do {
    --pos;
  } while (pos > 0 && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80);
  return pos;
}

}  // namespace

bool IsUnicodeWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

absl::StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const json& added_tokens) {
  AddedVocabulary vocab;
  try {
    for (const json& t : added_tokens) {
      AddedToken token;
      ASSIGN_OR_RETURN(token.id, TokenIdOf(t.at("id"), "an added token's id"));
      token.content = t.at("content").get<std::string>();
      token.special = t.value("special", false);
      token.lstrip = t.value("lstrip", false);
      token.rstrip = t.value("rstrip", false);
      token.normalized = t.value("normalized", !token.special);
      if (t.value("single_word", false)) {
        return absl::UnimplementedError(
            absl::StrCat("added token '", token.content, "' has single_word, not supported"));
      }
      if (token.content.empty()) return absl::InvalidArgumentError("empty added token");
      vocab.has_normalized_ |= token.normalized;
      vocab.by_id_[token.id] = vocab.tokens_.size();
      vocab.by_content_[token.content] = vocab.tokens_.size();
      vocab.tokens_.push_back(std::move(token));
    }
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad added_tokens in tokenizer.json: ", e.what()));
  }
  for (size_t i = 0; i < vocab.tokens_.size(); ++i) {
    vocab.by_first_byte_[static_cast<unsigned char>(vocab.tokens_[i].content[0])].push_back(i);
  }
  for (auto& bucket : vocab.by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
      return vocab.tokens_[a].content.size() > vocab.tokens_[b].content.size();
    });
  }
  return vocab;
}

const AddedToken* AddedVocabulary::LongestAt(std::string_view text, size_t pos,
                                             bool normalized) const {
  for (size_t i : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
    const AddedToken& t = tokens_[i];
    if (t.normalized == normalized && text.compare(pos, t.content.size(), t.content) == 0)
      return &t;
  }
  return nullptr;
}

std::vector<Segment> AddedVocabulary::Split(std::string_view text, bool normalized) const {
  std::vector<Segment> out;
  size_t last = 0;  // end of the previous token (with its stripped white space)
  size_t pos = 0;
  while (pos < text.size()) {
    const AddedToken* t = by_first_byte_[static_cast<unsigned char>(text[pos])].empty()
                              ? nullptr
                              : LongestAt(text, pos, normalized);
    if (t == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos, end = pos + t->content.size();
    while (t->lstrip && begin > last) {
      const size_t prev = PrevCharStart(text, begin);
      if (!IsUnicodeWhitespace(DecodeChar(text, prev))) break;
      begin = prev;
    }
    while (t->rstrip && end < text.size() && IsUnicodeWhitespace(DecodeChar(text, end))) {
      end += CharLength(static_cast<unsigned char>(text[end]));
    }
    if (begin > last) out.push_back({last, begin, -1});
    out.push_back({begin, end, t->id});
    last = pos = end;
  }
  if (last < text.size()) out.push_back({last, text.size(), -1});
  return out;
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::FindByContent(std::string_view content) const {
  auto it = by_content_.find(absl::string_view(content.data(), content.size()));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

}  // namespace moe::text
