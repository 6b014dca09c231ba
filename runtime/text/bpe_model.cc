// BPE model (see bpe_model.h).
#include "runtime/text/bpe_model.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/status_macros.h"
#include "runtime/text/byte_level.h"
#include "runtime/text/token_id.h"
#include "runtime/text/utf8.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A queued candidate merge of the symbol at `pos` with its right neighbour.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // Lowest rank first, then leftmost, as Hugging Face's BinaryHeap ordering does.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const json& model, bool byte_level) {
  try {
    if (model.value("type", "BPE") != "BPE") {
      return absl::UnimplementedError(absl::StrCat("unsupported tokenizer model type '",
                                                   model.value("type", ""), "' (only BPE)"));
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
      if (model.contains(key) && !model[key].is_null()) {
        return absl::UnimplementedError(absl::StrCat("BPE option '", key, "' is not supported"));
      }
    }
    auto bpe = std::unique_ptr<BpeModel>(new BpeModel());
    bpe->byte_level_ = byte_level;
    bpe->byte_fallback_ = model.value("byte_fallback", false);
    bpe->fuse_unk_ = model.value("fuse_unk", false);
    bpe->ignore_merges_ = model.value("ignore_merges", false);
    RETURN_IF_ERROR(bpe->LoadVocab(model.at("vocab")));
    RETURN_IF_ERROR(bpe->LoadMerges(model.at("merges")));
    if (model.contains("unk_token") && !model["unk_token"].is_null()) {
      const std::string unk = model["unk_token"].get<std::string>();
      bpe->unk_id_ = bpe->TokenToId(unk);
      if (!bpe->unk_id_) {
        return absl::InvalidArgumentError(absl::StrCat("unk_token '", unk, "' is not in vocab"));
      }
    }
    return bpe;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("bad BPE model in tokenizer.json: ", e.what()));
  }
}

absl::Status BpeModel::LoadVocab(const json& vocab) {
  int32_t max_id = -1;
  for (const auto& [token, id_json] : vocab.items()) {
    ASSIGN_OR_RETURN(const int32_t id, TokenIdOf(id_json, absl::StrCat("the vocab's id of '", token, "'")));
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(max_id + 1, std::string());
  has_id_.assign(max_id + 1, false);
  std::fill(std::begin(byte_unit_ids_), std::end(byte_unit_ids_), -1);
  std::fill(std::begin(byte_fallback_ids_), std::end(byte_fallback_ids_), -1);
  for (const auto& [token, id_json] : vocab.items()) {
    const int32_t id = *TokenIdOf(id_json, token);  // checked above
    id_to_token_[id] = token;
    has_id_[id] = true;
    token_to_id_[token] = id;
    // Tokens outside the byte-level alphabet can never come out of a byte-level word.
    std::optional<std::string> unit = byte_level_ ? ByteLevelToBytes(token) : token;
    if (!unit) continue;
    if (unit->size() == 1 && byte_level_)
      byte_unit_ids_[static_cast<unsigned char>((*unit)[0])] = id;
    vocab_[*unit] = id;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = token_to_id_.find(absl::StrFormat("<0x%02X>", b));
    if (it != token_to_id_.end()) byte_fallback_ids_[b] = it->second;
  }
  return absl::OkStatus();
}

absl::Status BpeModel::LoadMerges(const json& merges) {
  merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const json& merge : merges) {
    std::string left, right;
    if (merge.is_array() && merge.size() == 2) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("bad merge '", line, "' (expected 'a b')"));
      }
      left = line.substr(0, space);
      right = line.substr(space + 1);
    }
    auto l = token_to_id_.find(left), r = token_to_id_.find(right);
    auto m = token_to_id_.find(left + right);
    if (l == token_to_id_.end() || r == token_to_id_.end() || m == token_to_id_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("merge ", rank, " ('", left, "', '", right,
                                                     "') uses a token that is not in vocab"));
    }
    // A repeated pair keeps its last rank, as a Rust HashMap built from the list does.
    merges_.insert_or_assign(PairKey(l->second, r->second), Merge{rank, m->second});
    ++rank;
  }
  return absl::OkStatus();
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(AbslView(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

std::optional<BpeModel::Merge> BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  if (it == merges_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<Symbol>* symbols) const {
  auto add = [symbols](int32_t id, size_t size) {
    const auto n = static_cast<int32_t>(symbols->size());
    symbols->push_back({id, n - 1, n + 1, static_cast<uint32_t>(size)});
  };
  int32_t unk_id = -1;  // an unknown run waiting to be fused with the next unknown unit
  size_t unk_size = 0;
  auto flush_unk = [&] {
    if (unk_id >= 0) add(unk_id, unk_size);
    unk_id = -1;
  };
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t n = byte_level_ ? 1 : CharLength(static_cast<unsigned char>(word[pos]));
    const std::string_view unit = word.substr(pos, n);
    int32_t id = -1;
    if (byte_level_) {
      id = byte_unit_ids_[static_cast<unsigned char>(unit[0])];
    } else if (auto it = vocab_.find(AbslView(unit)); it != vocab_.end()) {
      id = it->second;
    }
    pos += n;
    if (id >= 0) {
      flush_unk();
      add(id, n);
      continue;
    }
    if (byte_fallback_ && std::all_of(unit.begin(), unit.end(), [&](char c) {
          return byte_fallback_ids_[static_cast<unsigned char>(c)] >= 0;
        })) {
      flush_unk();
      for (char c : unit) add(byte_fallback_ids_[static_cast<unsigned char>(c)], 1);
      continue;
    }
    if (!unk_id_) continue;  // no unknown token: the unit is dropped, as in tokenizers
    if (unk_id >= 0 && fuse_unk_) {
      unk_size += n;
    } else {
      flush_unk();
      unk_id = *unk_id_;
      unk_size = n;
    }
  }
  flush_unk();
  if (!symbols->empty()) symbols->back().next = -1;
}

void BpeModel::MergeAll(std::vector<Symbol>* symbols_ptr) const {
  std::vector<Symbol>& s = *symbols_ptr;
  std::vector<Candidate> queue;
  queue.reserve(s.size());
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(s.size()); ++i) {
    if (auto m = FindMerge(s[i].id, s[i + 1].id)) queue.push_back({m->rank, i, m->new_id});
  }
  std::make_heap(queue.begin(), queue.end());
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end());
    const Candidate top = queue.back();
    queue.pop_back();
    Symbol& left = s[top.pos];
    if (left.size == 0 || left.next < 0) continue;
    const Symbol& right = s[left.next];
    // Skip stale candidates: either side has changed since this one was queued.
    const auto current = FindMerge(left.id, right.id);
    if (!current || current->rank != top.rank || current->new_id != top.new_id) continue;
    const int32_t right_pos = left.next;
    left.id = top.new_id;
    left.size += right.size;
    left.next = right.next;
    s[right_pos].size = 0;
    if (left.next >= 0) s[left.next].prev = top.pos;
    auto push = [&](int32_t pos) {
      if (pos < 0 || s[pos].next < 0) return;
      if (auto m = FindMerge(s[pos].id, s[s[pos].next].id)) {
        queue.push_back({m->rank, pos, m->new_id});
        std::push_heap(queue.begin(), queue.end());
      }
    };
    push(left.prev);
    push(top.pos);
  }
}

bool BpeModel::CacheLookup(std::string_view word, std::vector<int32_t>* ids) const {
  std::unique_lock<std::mutex> lock(cache_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  auto it = cache_.find(AbslView(word));
  if (it == cache_.end()) return false;
  ids->insert(ids->end(), it->second.begin(), it->second.end());
  return true;
}

void BpeModel::CacheInsert(std::string_view word, const int32_t* ids, size_t count) const {
  std::unique_lock<std::mutex> lock(cache_mu_, std::try_to_lock);
  if (!lock.owns_lock() || cache_.size() >= kMaxCacheEntries) return;
  cache_.try_emplace(std::string(word), std::vector<int32_t>(ids, ids + count));
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(AbslView(word)); it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable && CacheLookup(word, ids)) return;
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  InitialSymbols(word, &symbols);
  MergeAll(&symbols);
  const size_t first = ids->size();
  for (const Symbol& symbol : symbols) {
    if (symbol.size > 0) ids->push_back(symbol.id);
  }
  if (cacheable) CacheInsert(word, ids->data() + first, ids->size() - first);
}

}  // namespace moe::text
