// BlockManager: the pool of KV cache blocks, their reference counts, and the prefix cache.
//
// A sequence's block table lists the blocks that hold its tokens. Full blocks can be shared
// through the prefix cache: a full block is keyed by a hash chain
//   hash(block i) = H(hash(block i-1), tokens of block i),   hash(block -1) = H(cache salt)
// but a hash only finds a candidate. Each cached entry gets a fresh id and records its
// parent entry's id (the salt for a first block) and its tokens, and a hit must match all
// three, so a hit's whole prefix is the same text even when hashes collide (by chance or by
// a crafted prompt): a collision at insertion stops that sequence's caching, and children
// of an evicted entry no longer match once its hash is cached again. Blocks nobody
// references stay cached and are evicted least recently used first when the pool runs dry.
//
//   BlockManager blocks({.num_blocks = 1024, .block_size = 16});
//   PrefixMatch hit = blocks.MatchPrefix(prompt, salt);   // cached full blocks, referenced
//   if (!blocks.Grow(table, num_tokens)) { /* preempt someone */ }
//   blocks.CacheFullBlocks(table, tokens, num_computed, salt, chain);
//   blocks.Release(table);
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moe {

struct BlockManagerOptions {
  int num_blocks = 0;
  int block_size = 16;
  bool enable_prefix_caching = true;
  // Tests only: replaces the block hash (to make collisions); null = the built-in one.
  uint64_t (*block_hash_for_testing)(uint64_t parent, absl::Span<const int32_t> tokens) = nullptr;
};

// One full block of a sequence's prefix as the cache knows it.
struct ChainLink {
  uint64_t hash;
  uint64_t cache_id;  // the cache entry holding this content (maybe another sequence's)
};

struct PrefixMatch {
  std::vector<int32_t> blocks;   // referenced on behalf of the caller
  std::vector<ChainLink> chain;  // to continue the chain from
  int num_tokens = 0;            // blocks.size() * block_size
};

struct PrefixCacheStats {
  int64_t queried_tokens = 0;
  int64_t hit_tokens = 0;
};

class BlockManager {
 public:
  explicit BlockManager(const BlockManagerOptions& options);

  int num_blocks() const { return static_cast<int>(blocks_.size()); }
  int block_size() const { return block_size_; }
  // Blocks that can be handed out now: never used, freed, or cached but unreferenced.
  int num_free_blocks() const { return static_cast<int>(free_.size() + evictable_.size()); }
  int num_cached_blocks() const { return static_cast<int>(cache_.size()); }
  const PrefixCacheStats& stats() const { return stats_; }
  int BlocksFor(int num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // The longest run of cached full blocks matching the start of `tokens`, leaving at least
  // one token uncached (the model must run on something to produce logits).
  PrefixMatch MatchPrefix(absl::Span<const int32_t> tokens, absl::string_view salt);

  // Appends blocks to `table` until it holds `num_tokens`; all or nothing.
  bool Grow(std::vector<int32_t>& table, int num_tokens);

  // Registers table's full blocks among tokens[0, num_computed) in the prefix cache.
  // `chain` holds the links of the blocks already registered and is extended, so each
  // block is hashed once over a sequence's life; it stops growing at a hash collision.
  void CacheFullBlocks(absl::Span<const int32_t> table, absl::Span<const int32_t> tokens,
                       int num_computed, absl::string_view salt, std::vector<ChainLink>& chain);

  // Counts a first admission in the hit-rate statistics (retries and readmissions after
  // preemption are not new queries).
  void RecordAdmission(int prompt_tokens, int hit_tokens);

  // Drops the table's references (last block first, so it is evicted first) and clears it.
  void Release(std::vector<int32_t>& table);

 private:
  struct Block {
    int ref_count = 0;
    bool cached = false;
    // While cached: what a hit is verified against.
    uint64_t hash = 0;
    uint64_t cache_id = 0;               // unique over the manager's life
    uint64_t parent_id = 0;              // 0: the first block of a prefix, then `salt`
    std::string salt;
    std::vector<int32_t> tokens;
    std::list<int32_t>::iterator lru_position;  // valid while evictable
  };
  // Whether cached block `b` holds `tokens` right after the entry `parent_id` (or first,
  // under `salt`).
  bool Holds(const Block& b, uint64_t parent_id, absl::string_view salt,
             absl::Span<const int32_t> tokens) const;
  uint64_t HashBlock(uint64_t parent, absl::Span<const int32_t> tokens) const;
  uint64_t SaltHash(absl::string_view salt) const;
  int32_t TakeBlock();
  void Uncache(int32_t block);

  const int block_size_;
  const bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;        // unreferenced and uncached
  std::list<int32_t> evictable_;     // unreferenced but cached, least recently used first
  std::unordered_map<uint64_t, int32_t> cache_;  // hash -> block
  uint64_t next_cache_id_ = 1;
  uint64_t (*hash_for_testing_)(uint64_t, absl::Span<const int32_t>);
  PrefixCacheStats stats_;
};

}  // namespace moe
