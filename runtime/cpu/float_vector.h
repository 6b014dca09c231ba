// 16 float lanes as GCC/Clang vector extensions (one AVX-512 register, two AVX2 ones), for
// the CPU's row passes that the compiler does not vectorize by itself.
#pragma once

#include <cstdint>
#include <cstring>

namespace moe::cpu::vec {

constexpr int64_t kWidth = 16;
using Floats = float __attribute__((vector_size(4 * kWidth)));
using Ints = int32_t __attribute__((vector_size(4 * kWidth)));

inline Floats Load(const float* x) {
  Floats v;
  std::memcpy(&v, x, sizeof(v));
  return v;
}
inline Floats Splat(float x) { return Floats{} + x; }

}  // namespace moe::cpu::vec
