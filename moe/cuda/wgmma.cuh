// Hopper (sm_90a) warpgroup MMA (wgmma): thin wrappers over the PTX, one per instruction,
// so the kernels read as C++ (and a CPU emulator can stand in for this one header).
//
// A warpgroup is 4 consecutive warps (128 threads, the first warp's index a multiple of 4).
// Every wrapper but SwizzledChunkOffset and SmemDescriptor is warpgroup-collective: all 128
// threads call it with the same operands. The MMA reads A and B from shared memory through
// descriptors and accumulates into registers asynchronously:
//
//   FenceProxyAsync(); __syncthreads();  // tiles written by st.shared / cp.async are now
//                                        // visible to the tensor cores (the async proxy)
//   Fence();                             // orders earlier accumulator accesses
//   for each k16 step s:                 // 32 bytes further along the rows each step
//     MmaM64N128K16(acc, SmemDescriptor(a + 32 s), SmemDescriptor(b + 32 s), true);
//   Commit();                            // the MMAs above form one group
//   Wait<0>();                           // acc is ready and the tiles may be overwritten
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

// wgmma exists only in sm_90a code (the "a" features). Other device passes (a compute_90
// PTX for forward compatibility, say) compile these wrappers to a trap; RunExperts only
// takes the wgmma path on an sm_90 device, where the sm_90a code is what runs.
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MOE_WGMMA_ASM(...) __trap()
#else
#define MOE_WGMMA_ASM(...) asm volatile(__VA_ARGS__)
#endif

namespace moe::cuda::wgmma {

// Tiles are K-major: a row holds 64 bf16 (128 bytes) of one M or N index, stored in the
// 128-byte swizzle (what TMA's CU_TENSOR_MAP_SWIZZLE_128B writes): the 16-byte chunk c of
// row r sits at chunk position c ^ (r % 8) of that row. 8-row groups (1024 bytes) follow
// one another, and a tile starts 1024-byte aligned.
inline constexpr int kTileK = 64;
inline constexpr int kRowBytes = 128;
inline constexpr int kAtomBytes = 1024;

// Byte offset, from the tile's start, of the 16-byte chunk holding elements [8c, 8c + 8)
// of row r.
__device__ __forceinline__ int SwizzledChunkOffset(int r, int c) {
  return r * kRowBytes + ((c ^ (r % 8)) * 16);
}

// The shared memory matrix descriptor (PTX ISA, "Matrix Descriptor Format") of a tile laid
// out as above. `start` is the tile's first row advanced by 32 bytes (16 bf16) per k16
// step: the swizzle applies to the address bits, so the step is a plain add.
__device__ __forceinline__ uint64_t SmemDescriptor(const void* start) {
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(start));
  uint64_t desc = 0;
  desc |= (address & 0x3FFFFu) >> 4;               // bits 0-13: start address >> 4
  desc |= uint64_t{16 >> 4} << 16;                 // bits 16-29: leading byte offset
                                                   //   (unused by swizzled K-major tiles)
  desc |= uint64_t{kAtomBytes >> 4} << 32;         // bits 32-45: stride byte offset, one
                                                   //   8-row group to the next
  desc |= uint64_t{1} << 62;                       // bits 62-63: 1 = 128-byte swizzle
  return desc;
}

// Makes this thread's earlier generic-proxy writes to shared memory (st.shared, and
// cp.async once waited for) visible to the async proxy that wgmma reads through. Call it
// after the writes and before the barrier that hands the tile to the MMAs.
__device__ __forceinline__ void FenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Before the first MMA of a group: orders earlier accumulator and shared memory accesses.
__device__ __forceinline__ void Fence() {
  MOE_WGMMA_ASM("wgmma.fence.sync.aligned;\n" ::: "memory");
}

// Closes the group of MMAs issued since the last commit.
__device__ __forceinline__ void Commit() {
  MOE_WGMMA_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

// Waits until at most `kPending` committed groups of this warpgroup are still running.
template <int kPending>
__device__ __forceinline__ void Wait() {
  MOE_WGMMA_ASM("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Keeps the compiler from moving accesses of `d` across MMAs still in flight.
template <int kN>
__device__ __forceinline__ void FenceOperands(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// D[64, 128] = A[64, 16] B[128, 16]^T (+ D when `accumulate`): bf16 in, f32 D.
// A: 64 rows of a K-major tile; B: 128 rows of a K-major tile (weight rows, so D = A W^T).
// Thread t of the warpgroup, w = t / 32, l = t % 32, holds for each n8 block j = 0..15:
//   d[4j + 0], d[4j + 1] = D[16w + l/4,     8j + 2(l%4) + {0, 1}]
//   d[4j + 2], d[4j + 3] = D[16w + l/4 + 8, 8j + 2(l%4) + {0, 1}]
__device__ __forceinline__ void MmaM64N128K16(float (&d)[64], uint64_t a, uint64_t b,
                                              bool accumulate) {
  MOE_WGMMA_ASM(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16\n"
      "{"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},"
      " %64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
        "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
        "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
        "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
        "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),
        "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
        "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)));
}

}  // namespace moe::cuda::wgmma

#undef MOE_WGMMA_ASM
