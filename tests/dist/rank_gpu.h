// The GPU of this rank in the CUDA tests under mpirun: its local rank's on a host of GPUs,
// device 0 over the CUDA emulator (which gives every process a device of its own).
//
//   MOE_USE_RANK_GPU();   // skips, saying why, without a GPU for this rank
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "gtest/gtest.h"
#include "runtime/cuda/device.h"
#include "tests/dist/mpi_test_main.h"

namespace moe::testing {

// -1 when this rank has no GPU of its own.
inline int RankGpu() {
  int devices = 0;
  cudaDeviceProp prop{};
  if (!cuda::HasDevice() || cudaGetDeviceCount(&devices) != cudaSuccess ||
      cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    return -1;
  }
  const bool emulated = std::string(prop.name).rfind("EMU", 0) == 0;
  const int device = emulated ? 0 : Group().LocalRank();
  return device < devices ? device : -1;
}

}  // namespace moe::testing

#define MOE_USE_RANK_GPU()                                                                              \
  do {                                                                                                  \
    const int moe_gpu_ = ::moe::testing::RankGpu();                                                     \
    if (moe_gpu_ < 0) {                                                                                 \
      GTEST_SKIP() << "needs a GPU for local rank " << ::moe::testing::Group().LocalRank() << " ("       \
                   << (::moe::cuda::HasDevice() ? "too few GPUs" : ::moe::cuda::NoDeviceReason()) << ")"; \
    }                                                                                                   \
    ASSERT_EQ(cudaSetDevice(moe_gpu_), cudaSuccess);                                                    \
  } while (0)
