// Routed-token counts per expert, accumulated on the GPU from each layer's routing (for
// load reports: Model::RoutedTokensPerExpert).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace moe::cuda {

struct RoutedTokenCount {
  int64_t* counts = nullptr;              // [E] += tokens routed to each expert
  const int32_t* num_tokens = nullptr;    // device scalar: only tokens t < *num_tokens count
                                          // (a padded graph step's padding does not)
};

// counts[topk_ids[t, k]] += 1 for t < *num_tokens, k < K; rows up to max_tokens are read.
void AccumulateRoutedTokens(const int32_t* topk_ids /* [T, K] */, int32_t max_tokens, int32_t top_k,
                            int32_t num_experts, const RoutedTokenCount& count, cudaStream_t stream);

}  // namespace moe::cuda
