// Emulator stand-in for moe/cuda/wgmma.cuh (found first: -I tools/cuda_emu/shadow precedes
// -I <repo>). Include it as "moe/cuda/wgmma.cuh": a quoted "wgmma.cuh" from a header in
// <repo>/moe/cuda/ would pick the real file from its own directory first.
//
// The pure parts of the REAL header (kTileK, kRowBytes, kAtomBytes, SwizzledChunkOffset,
// SmemDescriptor) are used as written, so the emulator checks the real encoding: the real
// header is pulled in with #include_next, its asm statements compiled out and the
// instruction wrappers renamed out of the way. The instruction wrappers are replaced by
// calls into the emulator (emu_wgmma.inc), which decodes the descriptors per the PTX ISA.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "emu.h"

#define MOE_EMU_WGMMA_SHADOW 1

#pragma push_macro("asm")
#pragma push_macro("volatile")
#define asm
#define volatile(...)
#define FenceProxyAsync FenceProxyAsync_RealHeader
#define Fence Fence_RealHeader
#define Commit Commit_RealHeader
#define Wait Wait_RealHeader
#define FenceOperands FenceOperands_RealHeader
#define MmaM64N128K16 MmaM64N128K16_RealHeader
#include_next "moe/cuda/wgmma.cuh"
#undef FenceProxyAsync
#undef Fence
#undef Commit
#undef Wait
#undef FenceOperands
#undef MmaM64N128K16
#undef asm
#undef volatile
#pragma pop_macro("volatile")
#pragma pop_macro("asm")

namespace moe::cuda::wgmma {

// fence.proxy.async.shared::cta by the calling thread (recorded per thread).
inline void FenceProxyAsync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::emu::FenceProxyAsyncShared(file, line);
}

// wgmma.fence.sync.aligned: warpgroup collective.
inline void Fence(const char* file = __builtin_FILE(), int line = __builtin_LINE()) { ::emu::WgmmaFence(file, line); }

// wgmma.commit_group.sync.aligned: warpgroup collective.
inline void Commit(const char* file = __builtin_FILE(), int line = __builtin_LINE()) { ::emu::WgmmaCommit(file, line); }

// wgmma.wait_group.sync.aligned N: warpgroup collective; lands the retired results.
template <int kPending>
inline void Wait(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(kPending >= 0 && kPending <= 7, "wgmma.wait_group N must be in [0, 7]");
  ::emu::WgmmaWait(kPending, file, line);
}

// A compiler-only fence on the GPU; nothing to do here.
template <int kN>
inline void FenceOperands(float (&)[kN]) {}

// wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 with both operands from shared
// memory descriptors, imm-scale-a = imm-scale-b = 1, imm-trans-a = imm-trans-b = 0.
inline void MmaM64N128K16(float (&d)[64], uint64_t a, uint64_t b, bool accumulate,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::emu::WgmmaMmaBf16(d, 128, a, b, accumulate, file, line);
}

}  // namespace moe::cuda::wgmma
