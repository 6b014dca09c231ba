// DeviceKvCache: the paged KV cache in GPU memory, bf16, one key and one value tensor
// [num_blocks, block_size, KVH, hd] per layer. The engine holds it through runtime's
// KvCache (KvCache::External); the CUDA model finds it again with FromKvCache.
//
//   ASSIGN_OR_RETURN(KvCache kv, DeviceKvCache::Create(shape));   // for Model::CreateKvCache
//   DeviceKvCache* cache = DeviceKvCache::FromKvCache(kv);        // null for a host cache
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/kv_cache.h"

namespace moe::cuda {

class DeviceKvCache {
 public:
  // Allocates (and zeroes) the blocks and wraps them in a KvCache.
  static absl::StatusOr<KvCache> Create(const KvCacheShape& shape);
  static DeviceKvCache* FromKvCache(const KvCache& kv);

  const KvCacheShape& shape() const { return shape_; }
  // Layer views cover one block more than shape().num_blocks: the scratch block, which no
  // sequence owns, where the padding rows of a captured decode graph write their K/V.
  PagedKvLayer Layer(int layer) const;
  int32_t scratch_block() const { return shape_.num_blocks; }

 private:
  // Tells a DeviceKvCache from another backend's storage behind KvCache::external().
  static constexpr uint64_t kMagic = 0x6d6f652d6b762d31ull;  // "moe-kv-1"
  uint64_t magic_ = kMagic;
  KvCacheShape shape_;
  std::vector<DeviceTensor> keys_;    // [layers] of [blocks, bs, KVH, hd] bf16
  std::vector<DeviceTensor> values_;  // [layers] of [blocks, bs, KVH, hd] bf16
};

}  // namespace moe::cuda
