// Emulated cp.async primitives (see emu.h).
#pragma once
#include "emu.h"
inline void __pipeline_memcpy_async(void* dst, const void* src, size_t bytes, size_t src_zfill = 0) {
  if (src_zfill != 0) ::emu::Error("__pipeline_memcpy_async with zfill is not emulated");
  if (!(bytes == 4 || bytes == 8 || bytes == 16)) ::emu::Error("__pipeline_memcpy_async: size %zu", bytes);
  if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes)
    ::emu::Error("__pipeline_memcpy_async: misaligned %p <- %p (%zu bytes)", dst, src, bytes);
  ::emu::PipelineMemcpyAsync(dst, src, bytes);
}
inline void __pipeline_commit() { ::emu::PipelineCommit(); }
inline void __pipeline_wait_prior(size_t n) { ::emu::PipelineWaitPrior(static_cast<int>(n)); }
