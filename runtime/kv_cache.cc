#include "runtime/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace moe {

size_t KvCacheShape::BlockBytes(DType dtype) const {
  return 2ull * num_layers * block_size * num_kv_heads * head_dim * DTypeSize(dtype);
}

absl::StatusOr<KvCache> KvCache::Create(const KvCacheShape& shape) {
  const int bs = shape.block_size;
  if (bs <= 0 || (bs & (bs - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV block size must be a power of two, got ", bs));
  }
  if (shape.num_layers <= 0 || shape.num_blocks <= 0 || shape.num_kv_heads <= 0 ||
      shape.head_dim <= 0) {
    return absl::InvalidArgumentError("KV cache needs positive layers, blocks, heads and head_dim");
  }
  KvCache cache;
  cache.shape_ = shape;
  const Shape layer_shape = {shape.num_blocks, bs, shape.num_kv_heads, shape.head_dim};
  for (int l = 0; l < shape.num_layers; ++l) {
    cache.keys_.push_back(Tensor::Zeros(DType::kF32, layer_shape));
    cache.values_.push_back(Tensor::Zeros(DType::kF32, layer_shape));
  }
  return cache;
}

KvCache KvCache::External(const KvCacheShape& shape, std::shared_ptr<void> storage) {
  KvCache cache;
  cache.shape_ = shape;
  cache.external_ = std::move(storage);
  return cache;
}

}  // namespace moe
