// KvCache: the paged key/value cache of every attention layer.
//
// Each layer has a key and a value tensor [num_blocks, block_size, num_kv_heads, head_dim];
// token slot s lives at block s / block_size, offset s % block_size. The block size is a
// power of two. The CPU backend keeps f32 tensors here; a device backend keeps its blocks in
// its own memory (bf16 on the GPU) and hands the cache an opaque owner of them
// (KvCache::External), which only that backend looks inside.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/tensor.h"

namespace moe {

struct KvCacheShape {
  int num_layers = 0;
  int num_blocks = 0;
  int block_size = 16;
  int num_kv_heads = 0;
  int head_dim = 0;

  // Bytes of one block across all layers, keys and values, in `dtype`.
  size_t BlockBytes(DType dtype) const;
};

class KvCache {
 public:
  static absl::StatusOr<KvCache> Create(const KvCacheShape& shape);
  // A cache whose blocks live elsewhere, kept alive by `storage`; key() and value() are
  // undefined tensors.
  static KvCache External(const KvCacheShape& shape, std::shared_ptr<void> storage);

  const KvCacheShape& shape() const { return shape_; }
  void* external() const { return external_.get(); }  // null for a host cache
  Tensor& key(int layer) { return keys_[layer]; }      // [blocks, block_size, KVH, hd] f32
  Tensor& value(int layer) { return values_[layer]; }  // [blocks, block_size, KVH, hd] f32

 private:
  KvCacheShape shape_;
  std::vector<Tensor> keys_;
  std::vector<Tensor> values_;
  std::shared_ptr<void> external_;
};

}  // namespace moe
