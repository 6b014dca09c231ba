// Philox4x32-10: a counter-based random generator (Salmon et al., SC'11), as cuRAND and
// PyTorch use. The output is a pure function of (key, counter), so a seeded request draws
// the same numbers at the same step whatever else shares the batch, on the CPU or a GPU.
//
//   uint32_t bits = PhiloxBits24(/*key=*/seed, /*counter=*/step, /*choice=*/0);   // [0, 2^24)
#pragma once

#include <cstdint>

#include "runtime/host_device.h"

namespace moe {

struct PhiloxBlock {
  uint32_t v[4];
  MOE_HOST_DEVICE uint32_t operator[](int i) const { return v[i]; }
};

MOE_HOST_DEVICE inline PhiloxBlock Philox4x32(uint64_t key, PhiloxBlock ctr) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t{kM0} * ctr.v[0];
    const uint64_t p1 = uint64_t{kM1} * ctr.v[2];
    ctr = {{static_cast<uint32_t>(p1 >> 32) ^ ctr.v[1] ^ k0, static_cast<uint32_t>(p1),
            static_cast<uint32_t>(p0 >> 32) ^ ctr.v[3] ^ k1, static_cast<uint32_t>(p0)}};
    k0 += kW0;
    k1 += kW1;
  }
  return ctr;
}

// 24 random bits, for the draw at (counter_lo, counter_hi) of stream `key`.
MOE_HOST_DEVICE inline uint32_t PhiloxBits24(uint64_t key, uint64_t counter_lo, uint32_t counter_hi = 0) {
  const PhiloxBlock r = Philox4x32(key, {{static_cast<uint32_t>(counter_lo),
                                          static_cast<uint32_t>(counter_lo >> 32), counter_hi, 0}});
  return r.v[0] >> 8;
}

// A uniform float in [0, 1) with 24 random bits.
MOE_HOST_DEVICE inline float PhiloxUniform(uint64_t key, uint64_t counter_lo, uint32_t counter_hi = 0) {
  return static_cast<float>(PhiloxBits24(key, counter_lo, counter_hi)) * (1.0f / 16777216.0f);
}

}  // namespace moe
