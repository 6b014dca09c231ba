#include "moe/cuda/expert_load.h"

#include "runtime/check.h"
#include "runtime/cuda/cuda_check.h"

namespace moe::cuda {
namespace {

__global__ void AccumulateRoutedTokensKernel(const int32_t* offsets, int64_t* counts, int32_t E) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e < E) counts[e] += offsets[e + 1] - offsets[e];
}

}  // namespace

void AccumulateRoutedTokens(const int32_t* expert_offsets, int64_t* counts, int32_t num_experts,
                            cudaStream_t stream) {
  CHECK(num_experts > 0);
  AccumulateRoutedTokensKernel<<<(num_experts + 255) / 256, 256, 0, stream>>>(expert_offsets, counts,
                                                                             num_experts);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moe::cuda
