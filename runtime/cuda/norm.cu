#include "runtime/cuda/norm.h"

#include "runtime/check.h"
#include "runtime/cuda/launch.cuh"
#include "runtime/cuda/reduce.cuh"

namespace moe::cuda {
namespace {

constexpr int kThreads = 256;

// One block per row.
__global__ void AddRmsNormKernel(AddRmsNormArgs a) {
  AwaitPrecedingKernels();
  __shared__ float scratch[33];
  const int64_t row = blockIdx.x;
  float* x = a.residual + row * a.cols;
  const float* d = a.delta != nullptr ? a.delta + row * a.cols : nullptr;
  float sum = 0.0f;
  for (int c = threadIdx.x; c < a.cols; c += blockDim.x) {
    float v = x[c];
    if (d != nullptr) {
      v += d[c];
      x[c] = v;
    }
    sum += v * v;
  }
  sum = BlockSum(sum, scratch);
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(a.cols) + a.eps);
  __nv_bfloat16* y = a.out + row * a.cols;
  // Each thread reads back only the elements it wrote above, so no barrier is needed.
  for (int c = threadIdx.x; c < a.cols; c += blockDim.x) {
    y[c] = __float2bfloat16(a.weight[c] * (x[c] * inv));
  }
}

}  // namespace

void AddRmsNorm(const AddRmsNormArgs& args, cudaStream_t stream) {
  CHECK(args.rows >= 0 && args.cols > 0 && args.residual && args.weight && args.out);
  if (args.rows == 0) return;
  Launch(AddRmsNormKernel, args.rows, kThreads, 0, stream, args);
}

}  // namespace moe::cuda
