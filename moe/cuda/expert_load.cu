#include "moe/cuda/expert_load.h"

#include "runtime/check.h"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda {
namespace {

__global__ void AccumulateRoutedTokensKernel(const int32_t* topk_ids, int32_t max_tokens, int32_t K, int32_t E,
                                             RoutedTokenCount count) {
  AwaitPrecedingKernels();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= int64_t{max_tokens} * K || i / K >= *count.num_tokens) return;
  const int32_t e = topk_ids[i];
  if (e >= 0 && e < E) atomicAdd(reinterpret_cast<unsigned long long*>(count.counts + e), 1ull);
}

}  // namespace

void AccumulateRoutedTokens(const int32_t* topk_ids, int32_t max_tokens, int32_t top_k, int32_t num_experts,
                            const RoutedTokenCount& count, cudaStream_t stream) {
  CHECK(max_tokens >= 0 && top_k > 0 && num_experts > 0 && count.counts && count.num_tokens);
  const int64_t n = int64_t{max_tokens} * top_k;
  if (n == 0) return;
  Launch(AccumulateRoutedTokensKernel, static_cast<unsigned>((n + 255) / 256), 256, 0, stream, topk_ids,
         max_tokens, top_k, num_experts, count);
}

}  // namespace moe::cuda
