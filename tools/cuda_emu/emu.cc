// The emulator's runtime: fibers, the block scheduler, barriers, warp collectives, shared
// memory and cp.async. Compiled without sanitizer instrumentation; talks to TSan / ASan only
// through their annotation interfaces (EMU_TSAN / EMU_ASAN).
#include <sys/mman.h>
#include <ucontext.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <unistd.h>
#include <unordered_map>
#include <string>
#include <utility>
#include <vector>

#include "emu.h"

#ifdef EMU_TSAN
#include <sanitizer/tsan_interface.h>
extern "C" void __tsan_read_range(void* addr, unsigned long size);
extern "C" void __tsan_write_range(void* addr, unsigned long size);
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace emu {

dim3 g_block_idx, g_block_dim, g_grid_dim;

namespace {

enum State { kReady, kWaitBar, kWaitWarp, kWaitWg, kDone };

struct PendingCopy {
  void* dst;
  unsigned char data[16];
  size_t bytes;
};

}  // namespace

struct Fiber {
  ucontext_t ctx;
  bool in_kernel = false;  // past the kernel's entry (its parameters copied)
  bool awaited = false;    // called AwaitPrecedingKernels
  void* stack = nullptr;
  size_t stack_size = 0;
  uint3 tid;
  int linear = 0;
  State state = kReady;
  // barrier
  const char* bar_file = nullptr;
  int bar_line = 0;
  uint64_t bar_gen = 0;
  // warp collective
  CollKind coll_kind{};
  unsigned coll_mask = 0;
  uint64_t coll_value = 0, coll_out = 0;
  int coll_arg = 0, coll_width = 32;
  const char* coll_file = nullptr;
  int coll_line = 0;
  uint64_t coll_gen = 0;
  float* mma_d = nullptr;
  const float *mma_a = nullptr, *mma_b = nullptr, *mma_c = nullptr;
  // warpgroup collective (wgmma.*): see emu_wgmma.inc
  int wg_kind = 0;
  const void* wg_arg = nullptr;
  void (*wg_complete)(int wg, Fiber* const* members) = nullptr;
  const char* wg_file = nullptr;
  int wg_line = 0;
  // cp.async: pending copies tagged with their batch; `open_batch` is the uncommitted one.
  // Fixed arrays: fibers must not allocate (TSan would pair their heap use with main's).
  PendingCopy pend[64];
  int pend_batch[64];
  int n_pend = 0;
  int open_batch = 0;
#ifdef EMU_TSAN
  void* tsan_fiber = nullptr;
#endif
#ifdef EMU_ASAN
  void* fake_stack = nullptr;
#endif
};

Fiber* g_cur = nullptr;

// emu_wgmma.inc
void WgBlockBegin(int n_threads);
void WgBlockEnd();
void WgThreadExit(Fiber* f);
void NoteGenericSharedWrite(const void* p, size_t bytes, int thread);
#ifdef EMU_RACE
extern int g_wg_pending_ops;
void CheckAccumulatorAccess(uintptr_t addr, size_t size, bool write, uintptr_t pc);
#endif


namespace {

int g_errors = 0;
int g_error_prints = 0;
cudaError_t g_last_error = cudaSuccess;
const char* g_kernel_where = "";

// block state
std::vector<Fiber*> g_fibers;
int g_live = 0;
int g_bar_arrived = 0;
uint64_t g_bar_gen = 0;
struct Warp {
  unsigned arrived = 0;  // lanes waiting in the current collective / syncwarp
  bool is_syncwarp = false;
  uint64_t gen = 0;
};
std::vector<Warp> g_warps;

ucontext_t g_main_ctx;
#ifdef EMU_TSAN
void* g_main_tsan = nullptr;
// happens-before carriers; two per barrier kind, alternating by generation
char g_bar_sync[2];
std::vector<char> g_warp_sync;  // [warps * 2]
char g_kernel_sync;
#endif
#ifdef EMU_ASAN
const void* g_main_stack_bottom = nullptr;
size_t g_main_stack_size = 0;
#endif

// shared memory: a fresh mapping per block
constexpr size_t kArenaBytes = 256 * 1024;
unsigned char* g_static_arena = nullptr;
unsigned char* g_dyn_arena = nullptr;
size_t g_static_used = 0;
size_t g_static_bytes = 0;  // the block's static __shared__ bytes declared so far
size_t g_dyn_bytes = 0;
const void* g_kernel_id = nullptr;   // the running launch's kernel
bool g_shared_limit_reported = false;  // once per launch
bool g_pdl_launch = false;  // the running kernel came through Launch: it must await first
bool g_early_access_reported = false;  // once per launch
int g_static_keys[64];
size_t g_static_offs[64];
int g_num_static = 0;
std::map<const void*, int> g_max_dyn_smem;  // cudaFuncSetAttribute

constexpr size_t kStackBytes =
#if defined(EMU_TSAN) || defined(EMU_ASAN)
    64 * 1024;
#else
    128 * 1024;
#endif

const std::function<void()>* g_body = nullptr;

void Poison(unsigned char* p, size_t n) {
  volatile unsigned char* v = p;
  for (size_t i = 0; i < n; ++i) v[i] = 0xFF;
}

unsigned char* MapFresh(unsigned char* old, size_t bytes) {
  if (old != nullptr) munmap(old, bytes);  // under TSan this also clears the shadow
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::abort();
  }
  return static_cast<unsigned char*>(p);
}

void SwitchToFiber(Fiber* f) {
  g_cur = f;
#ifdef EMU_TSAN
  __tsan_switch_to_fiber(f->tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack, f->stack_size);
#endif
  swapcontext(&g_main_ctx, &f->ctx);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g_cur = nullptr;
}

// From a fiber back to the scheduler. `final`: the fiber never resumes.
void YieldToMain(bool final) {
  Fiber* f = g_cur;
#ifdef EMU_TSAN
  __tsan_switch_to_fiber(g_main_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &f->fake_stack, g_main_stack_bottom, g_main_stack_size);
#endif
  swapcontext(&f->ctx, &g_main_ctx);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, &g_main_stack_bottom, &g_main_stack_size);
#endif
  g_cur = f;
}

const char* StateName(State s) {
  switch (s) {
    case kReady: return "ready";
    case kWaitBar: return "__syncthreads";
    case kWaitWarp: return "warp-collective";
    case kWaitWg: return "warpgroup-collective (wgmma)";
    case kDone: return "exited";
  }
  return "?";
}

void ReleaseBarrierIfComplete() {
  if (g_bar_arrived == 0 || g_bar_arrived < g_live) return;
  // every live thread waits: check they wait at one call site
  const Fiber* first = nullptr;
  for (Fiber* f : g_fibers) {
    if (f->state != kWaitBar) continue;
    if (first == nullptr) {
      first = f;
    } else if (f->bar_line != first->bar_line || std::strcmp(f->bar_file, first->bar_file) != 0) {
      Error("%s: divergent __syncthreads: thread %d at %s:%d, thread %d at %s:%d", g_kernel_where,
            first->linear, first->bar_file, first->bar_line, f->linear, f->bar_file, f->bar_line);
      break;
    }
  }
  for (Fiber* f : g_fibers) {
    if (f->state == kWaitBar) f->state = kReady;
  }
  g_bar_arrived = 0;
  ++g_bar_gen;
}

unsigned LanesInBlock(int warp) {
  const int threads = int(g_block_dim.x * g_block_dim.y * g_block_dim.z);
  const int n = std::min(32, threads - warp * 32);
  return n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
}

uint32_t Lane(const Fiber* f) { return f->linear % 32; }

void CompleteCollective(int w) {
  Warp& warp = g_warps[w];
  Fiber* lanes[32] = {};
  for (int l = 0; l < 32; ++l) {
    const int idx = w * 32 + l;
    if (idx < int(g_fibers.size()) && (warp.arrived >> l & 1u)) lanes[l] = g_fibers[idx];
  }
  const Fiber* lead = nullptr;
  for (Fiber* f : lanes)
    if (f) {
      lead = f;
      break;
    }
  for (Fiber* f : lanes) {
    if (!f) continue;
    if (f->coll_kind != lead->coll_kind || f->coll_line != lead->coll_line ||
        std::strcmp(f->coll_file, lead->coll_file) != 0 || f->coll_mask != lead->coll_mask) {
      Error("%s: divergent warp collective in warp %d: lane %u kind %d at %s:%d mask %08x, lane %u kind %d at %s:%d mask %08x",
            g_kernel_where, w, Lane(lead), lead->coll_kind, lead->coll_file, lead->coll_line, lead->coll_mask, Lane(f),
            f->coll_kind, f->coll_file, f->coll_line, f->coll_mask);
      break;
    }
  }
  const CollKind kind = lead->coll_kind;
  if (kind == kMma) {
    float A[16][16], B[16][16], C[16][16];
    for (int l = 0; l < 32; ++l) {
      for (int e = 0; e < 8; ++e) {
        const int idx = l * 8 + e;
        A[idx / 16][idx % 16] = lanes[l]->mma_a[e];
        B[idx / 16][idx % 16] = lanes[l]->mma_b[e];
        C[idx / 16][idx % 16] = lanes[l]->mma_c[e];
      }
    }
    for (int l = 0; l < 32; ++l) {
      for (int e = 0; e < 8; ++e) {
        const int idx = l * 8 + e, i = idx / 16, j = idx % 16;
        float s = C[i][j];
        for (int k = 0; k < 16; ++k) s += A[i][k] * B[k][j];
        lanes[l]->mma_d[e] = s;
      }
    }
  } else if (kind == kBallot || kind == kAny || kind == kAll) {
    unsigned ballot = 0;
    for (int l = 0; l < 32; ++l)
      if (lanes[l] && lanes[l]->coll_value) ballot |= 1u << l;
    const unsigned members = warp.arrived;
    for (Fiber* f : lanes) {
      if (!f) continue;
      f->coll_out = kind == kBallot ? ballot : kind == kAny ? (ballot != 0) : (ballot == members);
    }
  } else if (kind == kMatchAny) {
    for (int l = 0; l < 32; ++l) {
      if (!lanes[l]) continue;
      unsigned m = 0;
      for (int o = 0; o < 32; ++o)
        if (lanes[o] && lanes[o]->coll_value == lanes[l]->coll_value) m |= 1u << o;
      lanes[l]->coll_out = m;
    }
  } else if (kind != kSyncWarp) {
    for (int l = 0; l < 32; ++l) {
      Fiber* f = lanes[l];
      if (!f) continue;
      const int width = f->coll_width;
      if (width <= 0 || width > 32 || (width & (width - 1))) Error("shfl width %d", width);
      const int base = l & ~(width - 1);
      int src = l;
      switch (kind) {
        case kShfl: src = base + (f->coll_arg & (width - 1)); break;
        case kShflXor: src = l ^ f->coll_arg; if (src >= base + width) src = l; break;
        case kShflDown: src = l + f->coll_arg; if (src >= base + width) src = l; break;
        case kShflUp: src = l - f->coll_arg; if (src < base) src = l; break;
        default: break;
      }
      if (src < 0 || src >= 32 || lanes[src] == nullptr) {
        Error("%s: shuffle at %s:%d: lane %d reads lane %d, which is not participating", g_kernel_where,
              f->coll_file, f->coll_line, l, src);
        f->coll_out = 0;
      } else {
        f->coll_out = lanes[src]->coll_value;
      }
    }
  }
  for (Fiber* f : lanes)
    if (f) f->state = kReady;
  warp.arrived = 0;
  ++warp.gen;
}

// Completes warp w's pending collective when every non-exited lane it names has arrived.
void TryCompleteWarp(int w) {
  Warp& warp = g_warps[w];
  if (warp.arrived == 0) return;
  const Fiber* any = nullptr;
  for (int l = 0; l < 32 && !any; ++l)
    if (warp.arrived >> l & 1u) any = g_fibers[w * 32 + l];
  const unsigned members = any->coll_mask & LanesInBlock(w);
  unsigned need = 0;
  for (int l = 0; l < 32; ++l)
    if ((members >> l & 1u) && g_fibers[w * 32 + l]->state != kDone) need |= 1u << l;
  if ((warp.arrived & need) == need) {
    if (any->coll_kind != kSyncWarp && need != members)
      Error("%s: warp op at %s:%d names exited lanes (mask %08x, live %08x)", g_kernel_where, any->coll_file,
            any->coll_line, members, need);
    CompleteCollective(w);
  }
}

// Called when the current fiber arrives at a collective/syncwarp; returns when released.
void ArriveWarp(Fiber* f, unsigned mask) {
  const int w = f->linear / 32;
  Warp& warp = g_warps[w];
  const unsigned lane_bit = 1u << Lane(f);
  if (!(mask & lane_bit)) Error("%s: lane %u calls a warp op at %s:%d with mask %08x excluding itself",
                                g_kernel_where, Lane(f), f->coll_file, f->coll_line, mask);
  f->state = kWaitWarp;
  f->coll_gen = warp.gen;
  warp.arrived |= lane_bit;
  TryCompleteWarp(w);
  while (f->state != kReady) YieldToMain(false);
}


#ifdef EMU_RACE
#include "emu_race.inc"
#endif

}  // namespace

uint3& CurTid() {
  if (g_cur == nullptr) {
    std::fprintf(stderr, "EMU: threadIdx outside a kernel\n");
    std::abort();
  }
  return g_cur->tid;
}

void Error(const char* fmt, ...) {
  ++g_errors;
  if (g_error_prints++ < 20) {
    va_list ap;
    va_start(ap, fmt);
    std::fprintf(stdout, "EMU ERROR: ");
    std::vfprintf(stdout, fmt, ap);
    std::fprintf(stdout, "\n");
    std::fflush(stdout);
    va_end(ap);
  }
}
int ErrorCount() { return g_errors; }
void ResetErrorCount() { g_errors = 0; g_error_prints = 0; }

#include "emu_launch.inc"

void* SharedAlloc(int key, size_t bytes, size_t align) {
  for (int i = 0; i < g_num_static; ++i)
    if (g_static_keys[i] == key) return g_static_arena + g_static_offs[i];
  {
    if (g_num_static == 64) {
      std::fprintf(stderr, "EMU: too many shared arrays\n");
      std::abort();
    }
    size_t off = (g_static_used + 63) / 64 * 64;  // 64-byte gap as a redzone
    off = (off + align - 1) / align * align;
    if (off + bytes > kArenaBytes) {
      std::fprintf(stderr, "EMU: static shared memory over %zu bytes\n", kArenaBytes);
      std::abort();
    }
#ifdef EMU_ASAN
    __asan_unpoison_memory_region(g_static_arena + off, bytes);
#endif
    g_static_keys[g_num_static] = key;
    g_static_offs[g_num_static++] = off;
    g_static_used = off + bytes + 64;
    g_static_bytes += bytes;
    CheckSharedLimit();
    return g_static_arena + off;
  }
}

void* DynShared() { return g_dyn_arena; }

void LdgCheck(const void* p, size_t bytes, const char* file, int line) {
  const uintptr_t a = uintptr_t(p);
  if ((a >= uintptr_t(g_static_arena) && a < uintptr_t(g_static_arena) + kArenaBytes) ||
      (a >= uintptr_t(g_dyn_arena) && a < uintptr_t(g_dyn_arena) + kArenaBytes))
    Error("%s: __ldg of shared memory at %s:%d", g_kernel_where, file, line);
#ifdef EMU_RACE
  for (uintptr_t c = a & ~uintptr_t(1); c < a + bytes; c += 2) {
    auto it = g_shadow.find(c);
    if (it == g_shadow.end()) continue;
    const Cell& cell = it->second;
    if (cell.ws.first >= 0 || (cell.block == g_block_linear && cell.w_epoch != ~0u)) {
      Error("%s: __ldg at %s:%d reads %#lx, written earlier in this kernel (block %d)", g_kernel_where, file, line,
            (unsigned long)c, cell.ws.first);
      break;
    }
  }
#endif
}

void SyncThreads(const char* file, int line) {
  Fiber* f = g_cur;
#ifdef EMU_TSAN
  __tsan_release(&g_bar_sync[g_bar_gen & 1]);
#endif
  f->bar_file = file;
  f->bar_line = line;
  f->bar_gen = g_bar_gen;
  f->state = kWaitBar;
  ++g_bar_arrived;
  ReleaseBarrierIfComplete();
  while (f->state != kReady) YieldToMain(false);
#ifdef EMU_TSAN
  __tsan_acquire(&g_bar_sync[f->bar_gen & 1]);
#endif
}

void SyncWarp(unsigned mask, const char* file, int line) {
  Fiber* f = g_cur;
  const int w = f->linear / 32;
#ifdef EMU_TSAN
  __tsan_release(&g_warp_sync[w * 2 + (g_warps[w].gen & 1)]);
#endif
  f->coll_kind = kSyncWarp;
  f->coll_file = file;
  f->coll_line = line;
  f->coll_mask = mask;
  const uint64_t gen = g_warps[w].gen;
  ArriveWarp(f, mask);
#ifdef EMU_TSAN
  __tsan_acquire(&g_warp_sync[w * 2 + (gen & 1)]);
#else
  (void)gen;
#endif
}

// The calling thread's fiber, its collective's kind, mask and call site filled in.
static Fiber* JoinCollective(CollKind kind, unsigned mask, const char* file, int line) {
  Fiber* f = g_cur;
  f->coll_kind = kind;
  f->coll_mask = mask;
  f->coll_file = file;
  f->coll_line = line;
  return f;
}

uint64_t WarpCollective(CollKind kind, unsigned mask, uint64_t value, int arg, int width, const char* file,
                        int line) {
  Fiber* f = JoinCollective(kind, mask, file, line);
  f->coll_value = value;
  f->coll_arg = arg;
  f->coll_width = width;
  ArriveWarp(f, mask);
  return f->coll_out;
}

void WarpMma(float* d, const float* a, const float* b, const float* c, const char* file, int line) {
  Fiber* f = JoinCollective(kMma, 0xffffffffu, file, line);
  f->mma_d = d;
  f->mma_a = a;
  f->mma_b = b;
  f->mma_c = c;
  ArriveWarp(f, 0xffffffffu);
}

// cp.async: the source is read now and the destination poisoned now (both as this thread's
// accesses); the data lands when a wait retires the batch.
void PipelineMemcpyAsync(void* dst, const void* src, size_t bytes) {
  Fiber* f = g_cur;
  if (f->n_pend == 64) {
    std::fprintf(stderr, "EMU: more than 64 cp.async copies in flight\n");
    std::abort();
  }
  PendingCopy& c = f->pend[f->n_pend];
  f->pend_batch[f->n_pend++] = f->open_batch;
  c.dst = dst;
  c.bytes = bytes;
#ifdef EMU_TSAN
  __tsan_read_range(const_cast<void*>(src), bytes);
  __tsan_write_range(dst, bytes);
#endif
#ifdef EMU_RACE
  Access(uintptr_t(src), bytes, kRead, uintptr_t(__builtin_return_address(0)));
  Access(uintptr_t(dst), bytes, kWrite, uintptr_t(__builtin_return_address(0)));
#endif
#ifdef EMU_ASAN
  if (__asan_region_is_poisoned(const_cast<void*>(src), bytes))
    Error("%s: cp.async reads poisoned (out-of-bounds?) memory %p", g_kernel_where, src);
  if (__asan_region_is_poisoned(dst, bytes))
    Error("%s: cp.async writes poisoned (out-of-bounds?) shared memory %p", g_kernel_where, dst);
#endif
  const volatile unsigned char* s = static_cast<const unsigned char*>(src);
  for (size_t i = 0; i < bytes; ++i) c.data[i] = s[i];
  Poison(static_cast<unsigned char*>(dst), bytes);
}

void PipelineCommit() { ++g_cur->open_batch; }

// Retires every batch but the newest n committed ones.
void PipelineWaitPrior(int n) {
  Fiber* f = g_cur;
  const int limit = f->open_batch - n;  // batches < limit land now
  int kept = 0;
  for (int i = 0; i < f->n_pend; ++i) {
    if (f->pend_batch[i] < limit) {
      const PendingCopy& c = f->pend[i];
#ifdef EMU_TSAN
      __tsan_write_range(c.dst, c.bytes);
#endif
#ifdef EMU_RACE
      Access(uintptr_t(c.dst), c.bytes, kWrite, uintptr_t(__builtin_return_address(0)));
#endif
      volatile unsigned char* d = static_cast<unsigned char*>(c.dst);
      for (size_t b = 0; b < c.bytes; ++b) d[b] = c.data[b];
      NoteGenericSharedWrite(c.dst, c.bytes, f->linear);
    } else {
      f->pend[kept] = f->pend[i];
      f->pend_batch[kept++] = f->pend_batch[i];
    }
  }
  f->n_pend = kept;
}

namespace {

void FiberEntry() {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g_main_stack_bottom, &g_main_stack_size);
#endif
  (*g_body)();
  Fiber* f = g_cur;
  if (f->n_pend != 0)
    Error("%s: thread %d exits with cp.async copies never waited for", g_kernel_where, f->linear);
  f->state = kDone;
  --g_live;
#ifdef EMU_TSAN
  __tsan_release(&g_kernel_sync);
#endif
  // an exited thread no longer holds up barriers
  ReleaseBarrierIfComplete();
  // ...nor warp ops (a shuffle that still waits for it reports the missing lane)
  TryCompleteWarp(f->linear / 32);
  // ...nor warpgroup collectives (reported: a wgmma op needs all 128 threads)
  WgThreadExit(f);
  YieldToMain(true);
  std::abort();  // never resumed
}

void RunBlock(dim3 block) {
  const int n = int(block.x * block.y * block.z);
  // fresh shared memory
#ifdef EMU_TSAN
  constexpr bool kFreshMaps = true;
#else
  constexpr bool kFreshMaps = false;
#endif
  if (g_static_arena == nullptr || kFreshMaps) {
    g_static_arena = MapFresh(g_static_arena, kArenaBytes);
    g_dyn_arena = MapFresh(g_dyn_arena, kArenaBytes);
  }
  Poison(g_static_arena, kArenaBytes);
  Poison(g_dyn_arena, kArenaBytes);
#ifdef EMU_ASAN
  __asan_poison_memory_region(g_static_arena, kArenaBytes);
  __asan_poison_memory_region(g_dyn_arena, kArenaBytes);
  __asan_unpoison_memory_region(g_dyn_arena, g_dyn_bytes);
#endif
  g_num_static = 0;
  g_static_used = 0;
  g_static_bytes = 0;

  static unsigned char* stack_region = nullptr;  // 1024 stacks, one mapping, reused
  if (stack_region == nullptr) {
    stack_region = MapFresh(nullptr, 1024 * kStackBytes);
#ifdef EMU_RACE
    g_stack_lo = uintptr_t(stack_region);
    g_stack_hi = g_stack_lo + 1024 * kStackBytes;
#endif
  }
  while (int(g_fibers.size()) < n) {
    Fiber* f = new Fiber;
    f->stack = stack_region + g_fibers.size() * kStackBytes;
    f->stack_size = kStackBytes;
    g_fibers.push_back(f);
  }
  // the block's fibers are the first n
  std::vector<Fiber*> all_fibers;
  all_fibers.swap(g_fibers);
  g_fibers.assign(all_fibers.begin(), all_fibers.begin() + n);
  g_warps.assign((n + 31) / 32, Warp{});
#ifdef EMU_TSAN
  g_warp_sync.assign(g_warps.size() * 2, 0);
#endif
  g_live = n;
  g_bar_arrived = 0;
  g_bar_gen = 0;
  WgBlockBegin(n);
  for (int i = 0; i < n; ++i) {
    Fiber* f = g_fibers[i];
    f->linear = i;
    f->tid = make_uint3(i % block.x, (i / block.x) % block.y, i / (block.x * block.y));
    f->state = kReady;
    f->n_pend = 0;
    f->in_kernel = f->awaited = false;
    f->open_batch = 0;
    f->coll_out = 0;
    f->wg_kind = 0;
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = f->stack_size;
    f->ctx.uc_link = nullptr;
    makecontext(&f->ctx, FiberEntry, 0);
#ifdef EMU_TSAN
    f->tsan_fiber = __tsan_create_fiber(0);
#endif
  }
  for (;;) {
    bool progressed = false;
    for (Fiber* f : g_fibers) {
      if (f->state == kReady) {
        SwitchToFiber(f);
        progressed = true;
      }
    }
    if (g_live == 0) break;
    if (!progressed) {
      Error("%s: block (%u,%u,%u) deadlocks", g_kernel_where, g_block_idx.x, g_block_idx.y, g_block_idx.z);
      for (Fiber* f : g_fibers)
        if (f->state != kDone)
          std::printf("  thread %d: %s (%s:%d / %s:%d / wgmma %s:%d)\n", f->linear, StateName(f->state),
                      f->bar_file ? f->bar_file : "", f->bar_line, f->coll_file ? f->coll_file : "", f->coll_line,
                      f->wg_file ? f->wg_file : "", f->wg_line);
      std::abort();
    }
  }
#ifdef EMU_TSAN
  for (Fiber* f : g_fibers) {
    __tsan_destroy_fiber(f->tsan_fiber);
    f->tsan_fiber = nullptr;
  }
#endif
  WgBlockEnd();
  g_fibers.swap(all_fibers);
}

}  // namespace

void RunGrid(dim3 grid, dim3 block, size_t dyn_smem, const void* kernel_id, const char* file, int line,
             const std::function<void()>& body) {
  g_bounds_reported = false;
  static std::string where;
  where = std::string(file) + ":" + std::to_string(line);
  g_kernel_where = where.c_str();
  cudaError_t refused = cudaSuccess;
  if (const std::string why = LaunchProblem(grid, block, dyn_smem, kernel_id, &refused); !why.empty()) {
    Error("%s: %s", g_kernel_where, why.c_str());
    g_last_error = refused;
    return;
  }
#ifdef EMU_TSAN
  if (g_main_tsan == nullptr) g_main_tsan = __tsan_get_current_fiber();
#endif
  g_dyn_bytes = dyn_smem;
  g_kernel_id = kernel_id;
  g_shared_limit_reported = false;
  g_early_access_reported = false;
  g_body = &body;
#ifdef EMU_RACE
  g_shadow.clear();  // kernels on one stream are ordered
#endif
  g_grid_dim = grid;
  g_block_dim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        g_block_idx = dim3(x, y, z);
#ifdef EMU_RACE
        g_block_linear = int32_t((uint64_t(z) * grid.y + y) * grid.x + x);
#endif
        RunBlock(block);
      }
#ifdef EMU_TSAN
  __tsan_acquire(&g_kernel_sync);  // stream order: the next launch and the host see it all
#endif
  g_body = nullptr;
}

}  // namespace emu

extern "C" cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::g_last_error;
  emu::g_last_error = cudaSuccess;
  return e;
}
extern "C" cudaError_t cudaPeekAtLastError() { return emu::g_last_error; }
extern "C" cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value > 227 * 1024) return cudaErrorInvalidValue;
    emu::g_max_dyn_smem[func] = value;
  }
  return cudaSuccess;
}


// ---- warpgroup MMA (wgmma), shared-window addresses, proxy fences ----
#include "emu_wgmma.inc"

// Device queries: one emulated Hopper device.
extern "C" cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
extern "C" cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 232448; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    default: std::fprintf(stderr, "EMU: cudaDeviceGetAttribute(%d) not emulated\n", int(attr)); std::abort();
  }
  return cudaSuccess;
}
