// Dispatch and Combine on the GPU.
//
// Dispatch is two launches and needs no scratch:
//   CountKernel (1 block):  shared-memory histogram of the ids, then thread 0 writes the
//                           prefix sums (E <= 1024, so a serial scan is a few microseconds).
//   PlaceKernel (E blocks): block e walks the flat ids in chunks of 1024 in order; in each
//                           chunk a ballot per warp and the warps' counts give every match its
//                           rank, so rows are placed stably in (t*K + k) order.
// Integer counts and ranks do not depend on scheduling, so the plan is deterministic.
#include "moe/cuda/dispatch.h"

#include <cstdint>

#include "moe/cuda/kernel_util.cuh"
#include "runtime/check.h"
#include "runtime/cuda/launch.cuh"

namespace moe::cuda {
namespace {

constexpr int kCountThreads = 1024;
constexpr int kPlaceThreads = 1024;
constexpr int kPlaceWarps = kPlaceThreads / kWarpSize;
constexpr int kCombineThreads = 256;

// expert_offsets [E+1] from topk_ids [N]; ids outside [0, E) get row_of = -1.
__global__ void __launch_bounds__(kCountThreads) CountKernel(const DispatchArgs args) {
  AwaitPrecedingKernels();
  __shared__ int32_t counts[kDispatchMaxExperts];  // [E]
  const int32_t E = args.num_experts;
  const int64_t N = static_cast<int64_t>(args.num_tokens) * args.top_k;
  for (int32_t e = threadIdx.x; e < E; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    const int32_t id = args.topk_ids[i];
    if (id >= 0 && id < E) {
      atomicAdd(&counts[id], 1);
    } else {
      args.plan.row_of[i] = -1;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t sum = 0;
    args.plan.expert_offsets[0] = 0;
    for (int32_t e = 0; e < E; ++e) {
      sum += counts[e];
      args.plan.expert_offsets[e + 1] = sum;
    }
  }
}

// Block e places expert e's rows. Every thread runs the same chunks (the loop bound and
// `placed` are block-uniform), so each __syncthreads is reached by all threads.
__global__ void __launch_bounds__(kPlaceThreads) PlaceKernel(const DispatchArgs args) {
  AwaitPrecedingKernels();
  __shared__ int32_t warp_counts[kPlaceWarps];  // matches per warp in the current chunk
  const int32_t e = blockIdx.x;
  const int32_t begin = args.plan.expert_offsets[e];
  const int32_t count = args.plan.expert_offsets[e + 1] - begin;
  if (count <= 0) return;  // block-uniform, before any barrier
  const int K = args.top_k;
  const int64_t N = static_cast<int64_t>(args.num_tokens) * K;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const uint32_t lanes_below = (1u << lane) - 1u;

  int32_t placed = 0;  // rows of e in earlier chunks; the same on every thread
  for (int64_t chunk = 0; chunk < N; chunk += kPlaceThreads) {
    const int64_t i = chunk + threadIdx.x;
    const bool mine = i < N && args.topk_ids[i] == e;
    const uint32_t ballot = __ballot_sync(0xffffffffu, mine);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int32_t before = 0, total = 0;  // matches in lower warps of this chunk, and in all
    for (int w = 0; w < kPlaceWarps; ++w) {
      const int32_t c = warp_counts[w];
      if (w < warp) before += c;
      total += c;
    }
    if (mine) {
      const int32_t row = begin + placed + before + __popc(ballot & lanes_below);
      args.plan.row_of[i] = row;
      args.plan.source_token[row] = static_cast<int32_t>(i / K);
    }
    placed += total;
    __syncthreads();             // warp_counts is rewritten by the next chunk
    if (placed >= count) break;  // block-uniform
  }
}

// out [T, D]: block (t, column chunk), kVec consecutive columns per thread.
template <int kVec>
__global__ void __launch_bounds__(kCombineThreads) CombineKernel(const CombineArgs args) {
  AwaitPrecedingKernels();
  const int64_t t = blockIdx.x;
  const int64_t d = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * kVec;
  const int64_t D = args.hidden, K = args.top_k, N = static_cast<int64_t>(args.num_tokens) * K;
  if (d >= D) return;  // no barriers in this kernel
  float acc[kVec] = {};
  for (int64_t k = 0; k < K; ++k) {
    const int32_t row = args.row_of[t * K + k];
    if (row < 0 || row >= N) continue;  // a dropped (invalid) expert id
    const float w = args.topk_weights[t * K + k];
    const float* y = args.ys + row * D + d;
    if constexpr (kVec == 4) {
      const float4 v = *reinterpret_cast<const float4*>(y);
      acc[0] = fmaf(w, v.x, acc[0]);
      acc[1] = fmaf(w, v.y, acc[1]);
      acc[2] = fmaf(w, v.z, acc[2]);
      acc[3] = fmaf(w, v.w, acc[3]);
    } else {
      acc[0] = fmaf(w, y[0], acc[0]);
    }
  }
  float* o = args.out + t * D + d;
  if constexpr (kVec == 4) {
    *reinterpret_cast<float4*>(o) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  } else {
    o[0] = acc[0];
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

size_t DispatchWorkspaceBytes(int32_t max_tokens, int32_t top_k, int32_t num_experts) { return 0; }

void Dispatch(const DispatchArgs& args, void* workspace, cudaStream_t stream) {
  const int64_t N = static_cast<int64_t>(args.num_tokens) * args.top_k;
  CHECK(args.num_tokens >= 0 && args.top_k >= 1)
      << "num_tokens " << args.num_tokens << ", top_k " << args.top_k;
  CHECK(N <= INT32_MAX) << N << " dispatched rows do not fit int32 row indices";
  CHECK(args.num_experts >= 1 && args.num_experts <= kDispatchMaxExperts)
      << "Dispatch supports 1.." << kDispatchMaxExperts << " experts, got " << args.num_experts;
  CHECK(args.plan.expert_offsets != nullptr);
  CHECK(N == 0 || (args.topk_ids != nullptr && args.plan.source_token != nullptr &&
                   args.plan.row_of != nullptr));
  // Runs even for N = 0: the offsets (all zero) are still written.
  Launch(CountKernel, 1, kCountThreads, 0, stream, args);
  if (N == 0) return;
  Launch(PlaceKernel, args.num_experts, kPlaceThreads, 0, stream, args);
}

void Combine(const CombineArgs& args, cudaStream_t stream) {
  CHECK(args.num_tokens >= 0 && args.top_k >= 1 && args.hidden >= 1)
      << "num_tokens " << args.num_tokens << ", top_k " << args.top_k << ", hidden " << args.hidden;
  CHECK(static_cast<int64_t>(args.num_tokens) * args.top_k <= INT32_MAX);
  if (args.num_tokens == 0) return;
  CHECK(args.ys != nullptr && args.row_of != nullptr && args.topk_weights != nullptr &&
        args.out != nullptr);
  const bool vec4 = args.hidden % 4 == 0 && Aligned16(args.ys) && Aligned16(args.out);
  const int vec = vec4 ? 4 : 1;
  const dim3 grid(args.num_tokens,
                  static_cast<unsigned>(CeilDiv(CeilDiv(args.hidden, vec), kCombineThreads)));
  if (vec4) {
    Launch(CombineKernel<4>, grid, kCombineThreads, 0, stream, args);
  } else {
    Launch(CombineKernel<1>, grid, kCombineThreads, 0, stream, args);
  }
}

}  // namespace moe::cuda
