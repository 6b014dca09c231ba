#include "runtime/cuda/qkv.h"

#include <cmath>

#include "runtime/check.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/launch.cuh"
#include "runtime/cuda/reduce.cuh"

namespace moe::cuda {
namespace {

constexpr int kThreads = 256;

// RMSNorm of `count` rows of `cols` elements starting at x, in place, one warp per row.
__device__ void NormRowsPerWarp(float* x, int count, int cols, const float* weight, float eps) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int r = warp; r < count; r += warps) {
    float* row = x + r * cols;
    float sum = 0.0f;
    for (int c = lane; c < cols; c += 32) sum += row[c] * row[c];
    sum = WarpSum(sum);
    const float inv = 1.0f / sqrtf(sum / static_cast<float>(cols) + eps);
    for (int c = lane; c < cols; c += 32) row[c] = weight[c] * (row[c] * inv);
  }
}

// RMSNorm of one row of `cols` elements with the whole block.
__device__ void NormRowPerBlock(float* x, int cols, const float* weight, float eps, float* scratch) {
  float sum = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += x[c] * x[c];
  sum = BlockSum(sum, scratch);
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(cols) + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) x[c] = weight[c] * (x[c] * inv);
}

// Rotates `heads` head vectors of hd elements at x by position `pos`.
__device__ void Rope(float* x, int heads, int hd, int pos, const float* inv_freq) {
  const int half = hd / 2;
  for (int j = threadIdx.x; j < heads * half; j += blockDim.x) {
    const int h = j / half, i = j % half;
    const float angle = static_cast<float>(pos) * inv_freq[i];
    // The CPU reference takes cos/sin in double of the f32 angle: the same here.
    const float c = static_cast<float>(cos(static_cast<double>(angle)));
    const float s = static_cast<float>(sin(static_cast<double>(angle)));
    float* v = x + h * hd;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

// BlockSum's scratch: the kernel's static shared memory, which counts against the same
// per-block limit as the dynamic rows.
constexpr int kScratchFloats = 33;

// One block per token; the token's q, k, v rows sit in shared memory as f32.
__global__ void PrepareQkvKernel(PrepareQkvArgs a) {
  AwaitPrecedingKernels();
  extern __shared__ float row[];  // [(H + 2 KVH) * hd]: q, then k, then v
  __shared__ float scratch[kScratchFloats];
  const int64_t t = blockIdx.x;
  const int hd = a.head_dim, nq = a.heads * hd, nk = a.kv_heads * hd, n = nq + 2 * nk;
  float* q = row;
  float* k = row + nq;
  float* v = row + nq + nk;
  const int64_t q_stride = a.row_stride > 0 ? a.row_stride : nq;
  const int64_t kv_stride = a.row_stride > 0 ? a.row_stride : nk;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float x;
    if (i < nq) {
      x = a.q[t * q_stride + i] + (a.q_bias ? a.q_bias[i] : 0.0f);
    } else if (i < nq + nk) {
      x = a.k[t * kv_stride + (i - nq)] + (a.k_bias ? a.k_bias[i - nq] : 0.0f);
    } else {
      x = a.v[t * kv_stride + (i - nq - nk)] + (a.v_bias ? a.v_bias[i - nq - nk] : 0.0f);
    }
    row[i] = x;
  }
  __syncthreads();
  if (a.qk_norm == QkNormKind::kPerHead) {
    NormRowsPerWarp(q, a.heads, hd, a.q_norm, a.eps);
    NormRowsPerWarp(k, a.kv_heads, hd, a.k_norm, a.eps);
  } else if (a.qk_norm == QkNormKind::kWholeProjection) {
    NormRowPerBlock(q, nq, a.q_norm, a.eps, scratch);
    NormRowPerBlock(k, nk, a.k_norm, a.eps, scratch);
  }
  __syncthreads();
  if (a.clip > 0.0f) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = fminf(fmaxf(row[i], -a.clip), a.clip);
    __syncthreads();
  }
  const int pos = a.positions[t];
  Rope(q, a.heads, hd, pos, a.inv_freq);
  Rope(k, a.kv_heads, hd, pos, a.inv_freq);
  __syncthreads();
  for (int i = threadIdx.x; i < nq; i += blockDim.x) a.q_out[t * nq + i] = __float2bfloat16(q[i]);
  const int64_t kv_row = a.kv_slots != nullptr ? a.kv_slots[t] : t;
  // ValidateStepBatch rejects such slots; never write outside the cache all the same.
  if (a.kv_slots != nullptr && (kv_row < 0 || kv_row >= a.num_kv_slots)) return;
  for (int i = threadIdx.x; i < nk; i += blockDim.x) {
    a.k_out[kv_row * nk + i] = __float2bfloat16(k[i]);
    a.v_out[kv_row * nk + i] = __float2bfloat16(v[i]);
  }
}

}  // namespace

std::vector<float> RopeInverseFrequencies(double theta, int head_dim) {
  std::vector<float> inv_freq(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / static_cast<float>(std::pow(theta, static_cast<double>(exponent)));
  }
  return inv_freq;
}

void PrepareQkv(const PrepareQkvArgs& args, cudaStream_t stream) {
  CHECK(args.tokens >= 0 && args.heads > 0 && args.kv_heads > 0 && args.head_dim > 0 &&
        args.head_dim % 2 == 0);
  CHECK(args.qk_norm == QkNormKind::kNone || (args.q_norm != nullptr && args.k_norm != nullptr));
  CHECK(args.kv_slots == nullptr || args.num_kv_slots > 0) << "kv_slots needs num_kv_slots";
  if (args.tokens == 0) return;
  const size_t shared = sizeof(float) * (args.heads + 2 * args.kv_heads) * args.head_dim;
  static_assert(kThreads % 32 == 0);
  // Past 48 KB of static plus dynamic shared memory a launch fails unless the kernel opted in
  // (at head_dim 128 with 64 query and 16 KV heads the rows alone take exactly 48 KB).
  const size_t total = shared + sizeof(float) * kScratchFloats;
  if (total > 48 * 1024) {
    CHECK(total <= 227 * 1024) << "q, k, v of one token take " << shared << " bytes of shared memory";
    CUDA_CHECK(cudaFuncSetAttribute(PrepareQkvKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(shared)));
  }
  Launch(PrepareQkvKernel, args.tokens, kThreads, shared, stream, args);
}

}  // namespace moe::cuda
