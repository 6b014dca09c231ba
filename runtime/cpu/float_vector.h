// 16 float lanes as GCC/Clang vector extensions (one AVX-512 register, two AVX2 ones), for
// the CPU's row passes that the compiler does not vectorize by itself.
#pragma once

#include <cstdint>
#include <cstring>

namespace moe::cpu::vec {

constexpr int64_t kWidth = 16;
using Floats = float __attribute__((vector_size(4 * kWidth)));
using Ints = int32_t __attribute__((vector_size(4 * kWidth)));  // also the masks comparisons give
using Uints = uint32_t __attribute__((vector_size(4 * kWidth)));

inline Floats Load(const float* x) {
  Floats v;
  std::memcpy(&v, x, sizeof(v));
  return v;
}
inline Uints Load(const uint32_t* x) {
  Uints v;
  std::memcpy(&v, x, sizeof(v));
  return v;
}
inline Floats Splat(float x) { return Floats{} + x; }

// Whether any lane of a comparison's mask is set: its 64-bit words OR-ed (a few vector ops).
inline bool AnyLane(Ints mask) {
  uint64_t words[kWidth / 2];
  std::memcpy(words, &mask, sizeof(words));
  uint64_t any = 0;
  for (uint64_t w : words) any |= w;
  return any != 0;
}

}  // namespace moe::cpu::vec
