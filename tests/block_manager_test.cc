// The KV block pool: reference counts, the verified hash-chain prefix cache, LRU eviction,
// and every block coming back.
#include "runtime/engine/block_manager.h"

#include <numeric>

#include "gtest/gtest.h"

namespace moe {
namespace {

// The hash chain of a sequence that has registered nothing yet.
std::vector<ChainLink>& Fresh() {
  static std::vector<ChainLink> chain;
  chain.clear();
  return chain;
}

std::vector<int32_t> Range(int n, int start = 0) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(BlockManagerTest, GrowIsAllOrNothingAndReleaseReturnsEverything) {
  BlockManager blocks({.num_blocks = 4, .block_size = 4});
  std::vector<int32_t> a, b;
  EXPECT_TRUE(blocks.Grow(a, 9));  // 3 blocks
  EXPECT_EQ(a.size(), 3u);
  EXPECT_FALSE(blocks.Grow(b, 8));  // needs 2, 1 left
  EXPECT_TRUE(b.empty());
  EXPECT_TRUE(blocks.Grow(b, 4));
  EXPECT_EQ(blocks.num_free_blocks(), 0);
  blocks.Release(a);
  blocks.Release(b);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(blocks.num_free_blocks(), 4);
}

TEST(BlockManagerTest, SharesCachedFullBlocksAndNeverTheWholePrompt) {
  BlockManager blocks({.num_blocks = 8, .block_size = 4});
  const std::vector<int32_t> prompt = Range(12);  // exactly 3 blocks
  std::vector<int32_t> first;
  ASSERT_TRUE(blocks.Grow(first, 12));
  blocks.CacheFullBlocks(first, prompt, 12, "", Fresh());
  EXPECT_EQ(blocks.num_cached_blocks(), 3);

  // Same 12 tokens: only 2 blocks reused, so the last token still runs through the model.
  PrefixMatch same = blocks.MatchPrefix(prompt, "");
  EXPECT_EQ(same.num_tokens, 8);
  EXPECT_EQ(same.blocks, std::vector<int32_t>(first.begin(), first.begin() + 2));
  // A longer prompt with the same start reuses all 3.
  std::vector<int32_t> longer = Range(14);
  PrefixMatch hit = blocks.MatchPrefix(longer, "");
  EXPECT_EQ(hit.num_tokens, 12);
  // Another salt, or a different first block, shares nothing.
  EXPECT_EQ(blocks.MatchPrefix(longer, "tenant-b").num_tokens, 0);
  longer[0] = 99;
  EXPECT_EQ(blocks.MatchPrefix(longer, "").num_tokens, 0);

  blocks.Release(same.blocks);
  blocks.Release(hit.blocks);
  blocks.Release(first);
  EXPECT_EQ(blocks.num_free_blocks(), 8);
  EXPECT_EQ(blocks.num_cached_blocks(), 3);  // unreferenced but still cached
  EXPECT_EQ(blocks.stats().queried_tokens, 0);  // lookups are not admissions
  blocks.RecordAdmission(14, 12);
  EXPECT_EQ(blocks.stats().queried_tokens, 14);
  EXPECT_EQ(blocks.stats().hit_tokens, 12);
}

TEST(BlockManagerTest, EvictsLeastRecentlyUsedCachedBlocksLast) {
  BlockManager blocks({.num_blocks = 4, .block_size = 2});
  const std::vector<int32_t> a_tokens = {1, 2, 3, 4}, b_tokens = {5, 6, 7, 8};
  std::vector<int32_t> a, b;
  ASSERT_TRUE(blocks.Grow(a, 4));
  blocks.CacheFullBlocks(a, a_tokens, 4, "", Fresh());
  blocks.Release(a);  // a's blocks become evictable first
  ASSERT_TRUE(blocks.Grow(b, 4));
  blocks.CacheFullBlocks(b, b_tokens, 4, "", Fresh());
  blocks.Release(b);
  EXPECT_EQ(blocks.num_cached_blocks(), 4);

  std::vector<int32_t> c;
  ASSERT_TRUE(blocks.Grow(c, 2));  // evicts the least recently used: a's last block
  EXPECT_EQ(blocks.num_cached_blocks(), 3);
  EXPECT_EQ(blocks.MatchPrefix({1, 2, 3, 4, 0}, "").num_tokens, 2);  // a's first block survives
  EXPECT_EQ(blocks.MatchPrefix({5, 6, 7, 8, 0}, "").num_tokens, 4);  // b intact
}

// Blocks [1, 2] and [3, 4] collide; every other block hashes by its tokens.
uint64_t CollidingHash(uint64_t parent, absl::Span<const int32_t> tokens) {
  uint64_t h = parent * 1000003;
  for (int32_t t : tokens) h = h * 31 + (t == 3 ? 1 : t == 4 ? 2 : t);
  return h;
}

TEST(BlockManagerTest, AHashCollisionNeverServesAnotherPrefixsBlocks) {
  BlockManager blocks({.num_blocks = 16, .block_size = 2, .block_hash_for_testing = CollidingHash});
  std::vector<int32_t> a, b, c;
  std::vector<ChainLink> a_chain, b_chain, c_chain;
  ASSERT_TRUE(blocks.Grow(a, 2));
  blocks.CacheFullBlocks(a, {1, 2}, 2, "", a_chain);
  // [3, 4] hashes like [1, 2]: b caches nothing, not even its second block, whose KV was
  // computed after [3, 4].
  ASSERT_TRUE(blocks.Grow(b, 4));
  blocks.CacheFullBlocks(b, {3, 4, 5, 6}, 4, "", b_chain);
  EXPECT_TRUE(b_chain.empty());
  EXPECT_EQ(blocks.num_cached_blocks(), 1);
  PrefixMatch hit = blocks.MatchPrefix({1, 2, 5, 6, 7}, "");
  EXPECT_EQ(hit.num_tokens, 2) << "[5, 6] after [1, 2] was never computed";
  blocks.Release(hit.blocks);
  hit = blocks.MatchPrefix({3, 4, 5, 6, 7}, "");
  EXPECT_EQ(hit.num_tokens, 0) << "the cached [1, 2] is not [3, 4]";

  // The same content computed twice (c next to a): c's later blocks chain onto a's entry.
  ASSERT_TRUE(blocks.Grow(c, 4));
  blocks.CacheFullBlocks(c, {1, 2, 8, 9}, 4, "", c_chain);
  ASSERT_EQ(c_chain.size(), 2u);
  EXPECT_EQ(c_chain[0].cache_id, a_chain[0].cache_id);
  hit = blocks.MatchPrefix({1, 2, 8, 9, 7}, "");
  EXPECT_EQ(hit.num_tokens, 4);
  EXPECT_EQ(hit.blocks, (std::vector<int32_t>{a[0], c[1]}));
  blocks.Release(hit.blocks);
  // Another salt shares nothing.
  EXPECT_EQ(blocks.MatchPrefix({1, 2, 8, 9, 7}, "other").num_tokens, 0);
  blocks.Release(a);
  blocks.Release(b);
  blocks.Release(c);
  EXPECT_EQ(blocks.num_free_blocks(), 16);
}

TEST(BlockManagerTest, ChildrenOfAnEvictedEntryDoNotMatchItsSuccessor) {
  // a caches [1, 2][5, 6]. Its first block is evicted and [3, 4] (same hash) is cached in
  // its place: [5, 6]'s entry still sits under that hash, but was computed after [1, 2].
  BlockManager blocks({.num_blocks = 3, .block_size = 2, .block_hash_for_testing = CollidingHash});
  std::vector<int32_t> a, keep, b;
  std::vector<ChainLink> a_chain, b_chain;
  ASSERT_TRUE(blocks.Grow(a, 4));
  blocks.CacheFullBlocks(a, {1, 2, 5, 6}, 4, "", a_chain);
  PrefixMatch second = blocks.MatchPrefix({1, 2, 5, 6, 0}, "");  // holds [5, 6]'s block
  ASSERT_EQ(second.num_tokens, 4);
  blocks.Release(a);
  keep.push_back(second.blocks[1]);
  std::vector<int32_t> first{second.blocks[0]};
  blocks.Release(first);               // [1, 2]'s block is evictable, [5, 6]'s is held
  ASSERT_TRUE(blocks.Grow(b, 4));      // takes the free block and evicts [1, 2]
  blocks.CacheFullBlocks(b, {3, 4, 7, 7}, 2, "", b_chain);
  ASSERT_EQ(b_chain.size(), 1u) << "[3, 4] now holds the hash";
  EXPECT_EQ(blocks.MatchPrefix({3, 4, 5, 6, 0}, "").num_tokens, 2)
      << "[5, 6]'s entry belongs to the evicted [1, 2]";
  blocks.Release(keep);
}

TEST(BlockManagerTest, WithoutPrefixCachingNothingIsShared) {
  BlockManager blocks({.num_blocks = 4, .block_size = 2, .enable_prefix_caching = false});
  std::vector<int32_t> a;
  ASSERT_TRUE(blocks.Grow(a, 4));
  blocks.CacheFullBlocks(a, {1, 2, 3, 4}, 4, "", Fresh());
  EXPECT_EQ(blocks.MatchPrefix({1, 2, 3, 4, 5}, "").num_tokens, 0);
  blocks.Release(a);
  EXPECT_EQ(blocks.num_free_blocks(), 4);
}

}  // namespace
}  // namespace moe
