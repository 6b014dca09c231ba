#include "runtime/engine/block_manager.h"

#include <algorithm>

#include "runtime/check.h"

namespace moe {
namespace {

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

}  // namespace

BlockManager::BlockManager(const BlockManagerOptions& options)
    : block_size_(options.block_size),
      prefix_caching_(options.enable_prefix_caching),
      blocks_(options.num_blocks),
      hash_for_testing_(options.block_hash_for_testing) {
  CHECK(options.num_blocks > 0 && options.block_size > 0);
  // Popped from the back: block 0 is handed out first.
  for (int32_t b = options.num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

uint64_t BlockManager::SaltHash(absl::string_view salt) const {
  uint64_t h = 0x51ed2701u;
  for (unsigned char c : salt) h = Mix(h, c);
  return h;
}

uint64_t BlockManager::HashBlock(uint64_t parent, absl::Span<const int32_t> tokens) const {
  if (hash_for_testing_ != nullptr) return hash_for_testing_(parent, tokens);
  uint64_t h = Mix(parent, tokens.size());
  for (int32_t t : tokens) h = Mix(h, static_cast<uint32_t>(t));
  return h;
}

bool BlockManager::Holds(const Block& b, uint64_t parent_id, absl::string_view salt,
                         absl::Span<const int32_t> tokens) const {
  return b.cached && b.parent_id == parent_id && (parent_id != 0 || b.salt == salt) &&
         std::equal(b.tokens.begin(), b.tokens.end(), tokens.begin(), tokens.end());
}

PrefixMatch BlockManager::MatchPrefix(absl::Span<const int32_t> tokens, absl::string_view salt) {
  PrefixMatch match;
  if (!prefix_caching_) return match;
  const int max_blocks = (static_cast<int>(tokens.size()) - 1) / block_size_;
  ChainLink parent{.hash = SaltHash(salt), .cache_id = 0};
  for (int i = 0; i < max_blocks; ++i) {
    const auto block_tokens = tokens.subspan(i * block_size_, block_size_);
    const uint64_t hash = HashBlock(parent.hash, block_tokens);
    auto it = cache_.find(hash);
    if (it == cache_.end()) break;
    Block& block = blocks_[it->second];
    if (!Holds(block, parent.cache_id, salt, block_tokens)) break;  // a collision
    if (block.ref_count++ == 0) evictable_.erase(block.lru_position);
    match.blocks.push_back(it->second);
    parent = {.hash = hash, .cache_id = block.cache_id};
    match.chain.push_back(parent);
  }
  match.num_tokens = static_cast<int>(match.blocks.size()) * block_size_;
  return match;
}

int32_t BlockManager::TakeBlock() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    b = evictable_.front();
    evictable_.pop_front();
    Uncache(b);
  }
  CHECK_EQ(blocks_[b].ref_count, 0);
  blocks_[b].ref_count = 1;
  return b;
}

void BlockManager::Uncache(int32_t b) {
  Block& block = blocks_[b];
  if (!block.cached) return;
  cache_.erase(block.hash);
  block.cached = false;
  block.cache_id = 0;
  block.salt.clear();
  block.tokens.clear();
}

bool BlockManager::Grow(std::vector<int32_t>& table, int num_tokens) {
  const int needed = BlocksFor(num_tokens) - static_cast<int>(table.size());
  if (needed <= 0) return true;
  if (needed > num_free_blocks()) return false;
  for (int i = 0; i < needed; ++i) table.push_back(TakeBlock());
  return true;
}

void BlockManager::CacheFullBlocks(absl::Span<const int32_t> table, absl::Span<const int32_t> tokens,
                                   int num_computed, absl::string_view salt,
                                   std::vector<ChainLink>& chain) {
  if (!prefix_caching_) return;
  const int full = std::min<int>(num_computed / block_size_, table.size());
  ChainLink parent = chain.empty() ? ChainLink{.hash = SaltHash(salt), .cache_id = 0} : chain.back();
  for (int i = static_cast<int>(chain.size()); i < full; ++i) {
    Block& block = blocks_[table[i]];
    const auto block_tokens = tokens.subspan(i * block_size_, block_size_);
    const uint64_t hash = HashBlock(parent.hash, block_tokens);
    auto [it, inserted] = cache_.emplace(hash, table[i]);
    if (inserted) {
      block.cached = true;
      block.hash = hash;
      block.cache_id = next_cache_id_++;
      block.parent_id = parent.cache_id;
      if (parent.cache_id == 0) block.salt = std::string(salt);
      block.tokens.assign(block_tokens.begin(), block_tokens.end());
    } else if (!Holds(blocks_[it->second], parent.cache_id, salt, block_tokens)) {
      return;  // the hash is taken by other content: nothing after this block is cached
    }
    // This block's content is cached, here or (computed twice) in another block.
    parent = {.hash = hash, .cache_id = blocks_[it->second].cache_id};
    chain.push_back(parent);
  }
}

void BlockManager::RecordAdmission(int prompt_tokens, int hit_tokens) {
  stats_.queried_tokens += prompt_tokens;
  stats_.hit_tokens += hit_tokens;
}

void BlockManager::Release(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    Block& block = blocks_[*it];
    CHECK(block.ref_count > 0) << "block " << *it << " released twice";
    if (--block.ref_count > 0) continue;
    if (block.cached) {
      block.lru_position = evictable_.insert(evictable_.end(), *it);
    } else {
      free_.push_back(*it);
    }
  }
  table.clear();
}

}  // namespace moe
