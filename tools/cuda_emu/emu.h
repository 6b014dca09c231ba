// CPU emulation of the CUDA features the moe-serve kernels use. Force-included (-include)
// before every generated kernel TU.
//
// Model: a block's threads are fibers (ucontext) run by one OS thread, cooperatively:
//   __syncthreads        block barrier (exited threads count as arrived), call sites checked
//   __syncwarp           per-warp barrier
//   __shfl*_sync/__ballot_sync/wmma::mma_sync
//                        warp collectives: the call blocks until every lane named in the mask
//                        arrived (same call site checked); the last lane computes everyone's result
//   __pipeline_memcpy_async   at issue: source read, destination overwritten with 0xFF poison;
//                        the data lands at __pipeline_wait_prior, which retires the older batches
//   atomics              __atomic builtins, relaxed
// ThreadSanitizer (EMU_TSAN): every fiber is a TSan fiber switched with no_sync; barriers
// and __syncwarp are release/acquire on per-generation sync addresses; shuffles and
// collectives add no happens-before; blocks of one kernel are unordered with each other;
// kernels are ordered (stream order). Shared memory is a fresh mapping per block.
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

using std::max;
using std::min;

namespace emu {

struct Fiber;
extern Fiber* g_cur;
extern dim3 g_block_idx, g_block_dim, g_grid_dim;
uint3& CurTid();

// ---- errors ----
// Reports a kernel-correctness problem (divergent barrier, bad collective, bad launch,...).
void Error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
int ErrorCount();
void ResetErrorCount();

// ---- shared memory ----
void* SharedAlloc(int key, size_t bytes, size_t align);
void* DynShared();
template <typename T>
T& Shared(int key, size_t align) {
  return *static_cast<T*>(SharedAlloc(key, sizeof(T), std::max(align, alignof(T))));
}

// ---- barriers and warp collectives ----
void SyncThreads(const char* file, int line);
void SyncWarp(unsigned mask, const char* file, int line);

enum CollKind { kSyncWarp = 0, kShfl, kShflXor, kShflDown, kShflUp, kBallot, kAny, kAll, kMma, kMatchAny };
// Each lane passes value/arg; returns the lane's result.
uint64_t WarpCollective(CollKind kind, unsigned mask, uint64_t value, int arg, int width,
                        const char* file, int line);
// wmma mma: d = a * b + c over the warp's fragments (8 elements per lane, row-major).
void WarpMma(float* d, const float* a, const float* b, const float* c, const char* file, int line);

template <typename T>
uint64_t ToBits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
T FromBits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

// ---- cp.async ----
void PipelineMemcpyAsync(void* dst, const void* src, size_t bytes);
void PipelineCommit();
void PipelineWaitPrior(int n);

// ---- shared-memory window, async proxy, warpgroup MMA (emu_wgmma.inc) ----
// Shared-window address of a pointer into the block's shared memory (what
// __cvta_generic_to_shared returns on the GPU): dynamic shared memory occupies [0, dyn
// bytes), static __shared__ arrays follow from the next 1024-byte boundary.
uint32_t SharedWindowAddress(const void* p, const char* file, int line);
// fence.proxy.async.shared::cta by the calling thread.
void FenceProxyAsyncShared(const char* file, int line);
// wgmma.fence / commit_group / wait_group / mma_async (K-major bf16 A and B from shared
// memory descriptors, f32 accumulators): warpgroup collectives, see emu_wgmma.inc.
void WgmmaFence(const char* file, int line);
void WgmmaCommit(const char* file, int line);
void WgmmaWait(int pending, const char* file, int line);
void WgmmaMmaBf16(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool accumulate, const char* file, int line);
// True for the value the accumulators hold while a wgmma that writes them is in flight.
bool IsWgmmaPoison(float v);

// ---- launches ----
// What a GPU refuses when the launch is made (cudaLaunchKernelEx's error): block and grid
// dimensions, dynamic shared memory above the kernel's limit. cudaSuccess if none.
cudaError_t LaunchConfigError(dim3 grid, dim3 block, size_t dyn_smem, const void* kernel_id);
// __launch_bounds__(max_threads) on the running kernel (gen.py inserts the call): a block
// of more threads would fail to launch on a GPU.
void CheckLaunchBounds(unsigned max_threads, const char* file, int line);
// Every kernel's first statement (gen.py inserts it): the parameters are copied, and what the
// thread touches from here on is the kernel's. The race build reports a global access before
// AwaitPrecedingKernels in a kernel that Launch started with PDL (SetPdlLaunch).
void KernelEntry();
void SetPdlLaunch(bool pdl);
void RunGrid(dim3 grid, dim3 block, size_t dyn_smem, const void* kernel_id, const char* file,
             int line, const std::function<void()>& body);
struct Launcher {
  dim3 grid, block;
  size_t smem;
  const char* file;
  int line;
  Launcher(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr, const char* f = "", int l = 0)
      : grid(g), block(b), smem(s), file(f), line(l) {}
  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), A&&... args) {
    // Arguments are copied once, as a launch does.
    std::function<void()> body = [kernel, tup = std::make_tuple(static_cast<std::decay_t<P>>(args)...)] {
      std::apply(kernel, tup);
    };
    RunGrid(grid, block, smem, reinterpret_cast<const void*>(kernel), file, line, body);
  }
};

}  // namespace emu

#define threadIdx (::emu::CurTid())
#define blockIdx (::emu::g_block_idx)
#define blockDim (::emu::g_block_dim)
#define gridDim (::emu::g_grid_dim)

#define __syncthreads() ::emu::SyncThreads(__FILE__, __LINE__)
#define __syncwarp(...) ::emu::SyncWarp(::emu::MaskOrFull(__VA_ARGS__), __FILE__, __LINE__)

namespace emu {
inline unsigned MaskOrFull(unsigned m = 0xffffffffu) { return m; }
inline int WidthOr32(int w = 32) { return w; }
template <typename T>
T ShflImpl(CollKind k, unsigned mask, T v, int arg, int width, const char* f, int l) {
  return FromBits<T>(WarpCollective(k, mask, ToBits(v), arg, width, f, l));
}
}  // namespace emu
#define __shfl_sync(mask, v, src, ...) \
  ::emu::ShflImpl(::emu::kShfl, mask, v, src, ::emu::WidthOr32(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, lm, ...) \
  ::emu::ShflImpl(::emu::kShflXor, mask, v, lm, ::emu::WidthOr32(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, d, ...) \
  ::emu::ShflImpl(::emu::kShflDown, mask, v, d, ::emu::WidthOr32(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, d, ...) \
  ::emu::ShflImpl(::emu::kShflUp, mask, v, d, ::emu::WidthOr32(__VA_ARGS__), __FILE__, __LINE__)
#define __ballot_sync(mask, p) \
  static_cast<unsigned>(::emu::WarpCollective(::emu::kBallot, mask, (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __match_any_sync(mask, v) \
  static_cast<unsigned>(::emu::WarpCollective(::emu::kMatchAny, mask, ::emu::ToBits(v), 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, p) \
  static_cast<int>(::emu::WarpCollective(::emu::kAny, mask, (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, p) \
  static_cast<int>(::emu::WarpCollective(::emu::kAll, mask, (p) ? 1 : 0, 0, 32, __FILE__, __LINE__))

inline size_t __cvta_generic_to_shared(const void* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::emu::SharedWindowAddress(p, file, line);
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
namespace emu {
// __ldg is a non-coherent load: it must not read shared memory or anything written earlier in
// the same kernel (checked by the race build; the shared-memory check by every build).
void LdgCheck(const void* p, size_t bytes, const char* file, int line);
}  // namespace emu
#define __ldg(p) ::emu::LdgImpl(p, __FILE__, __LINE__)
namespace emu {
template <typename T>
inline T LdgImpl(const T* p, const char* file, int line) {
  LdgCheck(p, sizeof(T), file, line);
  return *p;
}
}  // namespace emu
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] inline void __trap() {
  std::fprintf(stderr, "EMU: __trap\n");
  std::abort();
}

template <typename T>
inline T atomicAdd(T* p, T v) {
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
  } else {
    T old = __atomic_load_n(reinterpret_cast<T*>(p), __ATOMIC_RELAXED);
    // f32/f64: CAS loop
    using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    U* up = reinterpret_cast<U*>(p);
    U expected = __atomic_load_n(up, __ATOMIC_RELAXED);
    for (;;) {
      T cur;
      std::memcpy(&cur, &expected, sizeof(T));
      T next = cur + v;
      U desired;
      std::memcpy(&desired, &next, sizeof(T));
      if (__atomic_compare_exchange_n(up, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        return cur;
      }
    }
    (void)old;
  }
}
template <typename T>
inline T atomicMax(T* p, T v) {
  T cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return cur;
}
template <typename T>
inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
template <typename T>
inline T atomicCAS(T* p, T cmp, T v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}

template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* f, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(f), attr, value);
}
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
