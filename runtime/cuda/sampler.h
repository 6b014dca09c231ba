// The CUDA sampler kernel: logits rows to tokens on the GPU, by the algorithm of
// runtime/sampling_math.h, the CPU sampler's (runtime/cpu/sampler.h), so that both pick the
// same token from the same logits, parameters and seed. One block per row, O(V) per pass:
// a radix select over the keys finds the top-k and top-p thresholds, never a sort. The
// device-side parameters and results are DeviceSampler's (runtime/cuda/device_sampler.h).
//
//   SampleRows({.logits = l, .vocab = V, .rows = n, .params = p, .out = o, ...}, stream);
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "runtime/sampling.h"

namespace moe::cuda {

// Where a step's sampling parameters live on the device; read by the kernel at run time,
// so that a captured graph follows buffers that grow.
struct DeviceSamplingParams {
  const RowSampling* rows = nullptr;           // [S'] one per logits row
  const TokenAdjustment* adjustments = nullptr;  // indexed by RowSampling::adjustments_begin/end
  float* originals = nullptr;                  // [adjustments] scratch: the raw logits they replace
};

// One row's result.
struct DeviceSample {
  int32_t token = -1;  // -1: nothing could be chosen (every processed logit NaN or -inf)
  float logprob = 0;   // of `token` under the raw logits
};

struct SampleRowsArgs {
  float* logits = nullptr;  // [rows, V] f32: read, and the adjusted tokens overwritten
  int32_t vocab = 0;        // V
  int32_t rows = 0;         // logits rows sampled here
  int32_t first_row = 0;    // the parameters and results of logits row r are at first_row + r
  const DeviceSamplingParams* params = nullptr;
  DeviceSample* out = nullptr;  // [first_row + rows]
  TokenLogprob* top = nullptr;  // [first_row + rows, top_stride]: a row's top_logprobs entries
  int32_t top_stride = 0;       // at least every row's top_logprobs
};

// Enqueues the sampling of every row (capturable: no host sync, no allocation).
void SampleRows(const SampleRowsArgs& args, cudaStream_t stream);

}  // namespace moe::cuda
