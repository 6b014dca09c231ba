#include "runtime/cuda/device_kv_cache.h"

#include <memory>

#include "runtime/cuda/cuda_check.h"
#include "runtime/status_macros.h"

namespace moe::cuda {

absl::StatusOr<KvCache> DeviceKvCache::Create(const KvCacheShape& shape) {
  // Validates the shape the same way the host cache does.
  const KvCacheShape one_layer_probe{.num_layers = 1, .num_blocks = 1, .block_size = shape.block_size,
                                     .num_kv_heads = shape.num_kv_heads, .head_dim = shape.head_dim};
  if (shape.num_layers <= 0 || shape.num_blocks <= 0) {
    return absl::InvalidArgumentError("KV cache needs positive layers and blocks");
  }
  RETURN_IF_ERROR(KvCache::Create(one_layer_probe).status());
  auto cache = std::make_shared<DeviceKvCache>();
  cache->shape_ = shape;
  const Shape layer_shape = {shape.num_blocks + 1, shape.block_size, shape.num_kv_heads, shape.head_dim};
  for (int l = 0; l < shape.num_layers; ++l) {
    ASSIGN_OR_RETURN(DeviceTensor k, DeviceTensor::Empty(DType::kBF16, layer_shape));
    ASSIGN_OR_RETURN(DeviceTensor v, DeviceTensor::Empty(DType::kBF16, layer_shape));
    // Zeroed, so attention never reads uninitialized bytes even through a stale block.
    CUDA_RETURN_IF_ERROR(cudaMemset(k.raw(), 0, k.nbytes()));
    CUDA_RETURN_IF_ERROR(cudaMemset(v.raw(), 0, v.nbytes()));
    cache->keys_.push_back(std::move(k));
    cache->values_.push_back(std::move(v));
  }
  // The memsets run on the legacy stream, which a non-blocking model stream does not wait for.
  CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  return KvCache::External(shape, std::move(cache));
}

DeviceKvCache* DeviceKvCache::FromKvCache(const KvCache& kv) {
  auto* cache = static_cast<DeviceKvCache*>(kv.external());
  return cache != nullptr && cache->magic_ == kMagic ? cache : nullptr;
}

PagedKvLayer DeviceKvCache::Layer(int layer) const {
  return PagedKvLayer{.key = keys_[layer].data<__nv_bfloat16>(),
                      .value = values_[layer].data<__nv_bfloat16>(),
                      .num_blocks = shape_.num_blocks + 1,
                      .block_size = shape_.block_size,
                      .num_kv_heads = shape_.num_kv_heads,
                      .head_dim = shape_.head_dim};
}

}  // namespace moe::cuda
