// BpeModel: the "BPE" model of tokenizer.json: vocabulary, ranked merges, byte fallback,
// unknown-token fusing and ignore_merges, as Hugging Face tokenizers applies them.
//
// A word is split into units (bytes for a byte-level tokenizer, else UTF-8 characters), then
// the adjacent pair with the lowest merge rank is merged until none is left. Results for
// short words are cached (the cache is shared and thread-safe).
//
//   ASSIGN_OR_RETURN(auto bpe, BpeModel::FromJson(json["model"], /*byte_level=*/true));
//   std::vector<int32_t> ids;
//   bpe->Tokenize(" world", &ids);   // [995] with GPT-2's vocabulary
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe::text {

class BpeModel {
 public:
  // `byte_level`: the pre-tokenizer is ByteLevel, so words arrive as raw bytes and the
  // vocabulary's byte-level spellings ("Ġworld") are converted to bytes (" world").
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model,
                                                            bool byte_level);

  // Appends the ids of `word` to `ids`.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  // The vocabulary's own spelling of `id` ("Ġworld"), or nullptr if no entry has that id.
  const std::string* IdToToken(int32_t id) const;
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // One past the largest id in the vocabulary.
  int32_t size() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  struct Symbol {
    int32_t id;
    int32_t prev;   // index of the previous live symbol, -1 at the start
    int32_t next;   // index of the next live symbol, -1 at the end
    uint32_t size;  // bytes covered; 0 once merged into the symbol on its left
  };

  BpeModel() = default;
  absl::Status LoadVocab(const nlohmann::json& vocab);
  absl::Status LoadMerges(const nlohmann::json& merges);
  void InitialSymbols(std::string_view word, std::vector<Symbol>* symbols) const;
  void MergeAll(std::vector<Symbol>* symbols) const;
  std::optional<Merge> FindMerge(int32_t left, int32_t right) const;
  bool CacheLookup(std::string_view word, std::vector<int32_t>* ids) const;
  void CacheInsert(std::string_view word, const int32_t* ids, size_t count) const;

  bool byte_level_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;
  absl::flat_hash_map<std::string, int32_t> vocab_;  // model spelling (raw bytes if byte-level)
  absl::flat_hash_map<std::string, int32_t> token_to_id_;  // the vocabulary's own spelling
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  int32_t byte_unit_ids_[256];                   // byte-level: id of each single byte, -1 if none
  int32_t byte_fallback_ids_[256];               // id of "<0xAB>", -1 if none
  absl::flat_hash_map<uint64_t, Merge> merges_;  // key: (left id << 32) | right id

  static constexpr size_t kMaxCachedWordBytes = 64;
  static constexpr size_t kMaxCacheEntries = 1 << 16;
  mutable std::mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;  // guarded by cache_mu_
};

}  // namespace moe::text
