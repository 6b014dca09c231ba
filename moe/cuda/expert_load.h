// Routed-token counts per expert, accumulated on the GPU from each layer's dispatch plan
// (for load reports: Model::RoutedTokensPerExpert).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace moe::cuda {

// counts[e] += expert_offsets[e + 1] - expert_offsets[e] for e in [0, E).
void AccumulateRoutedTokens(const int32_t* expert_offsets /* [E+1] */, int64_t* counts /* [E] */,
                            int32_t num_experts, cudaStream_t stream);

}  // namespace moe::cuda
