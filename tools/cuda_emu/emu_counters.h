// What the emulator counts for the tests that bound it (only in builds over tools/cuda_emu:
// those tests are compiled with MOE_CUDA_EMU defined).
//
//   const int64_t before = emu::DeviceToHostBytes();
//   ... a step ...
//   const int64_t copied = emu::DeviceToHostBytes() - before;
#pragma once

#include <cstdint>

namespace emu {

// Bytes moved by device-to-host copies so far, counted as each copy runs (so a copy in a
// replayed graph counts at every replay).
int64_t DeviceToHostBytes();

}  // namespace emu
