// KvCache: the paged key/value cache of every attention layer.
//
// Each layer has a key and a value tensor [num_blocks, block_size, num_kv_heads, head_dim];
// token slot s lives at block s / block_size, offset s % block_size. The block size is a
// power of two. The CPU backend keeps f32; the CUDA backend will keep bf16 on the device.
#pragma once

#include <cstddef>
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

  const KvCacheShape& shape() const { return shape_; }
  Tensor& key(int layer) { return keys_[layer]; }      // [blocks, block_size, KVH, hd] f32
  Tensor& value(int layer) { return values_[layer]; }  // [blocks, block_size, KVH, hd] f32

 private:
  KvCacheShape shape_;
  std::vector<Tensor> keys_;
  std::vector<Tensor> values_;
};

}  // namespace moe
