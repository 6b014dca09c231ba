// The emulator refuses what a GPU refuses. Each case plants one fault the hardware would
// reject and expects the emulator to report it (an EMU ERROR, or the error path the real
// Launch takes), then runs the same launch without the fault and expects nothing.
// Built only over the emulator (tools/cuda_emu/CMakeLists.txt): on a GPU these launches
// would simply fail.
#include "gtest/gtest.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/graph_cache.h"
#include "runtime/cuda/launch.cuh"

namespace {

constexpr int kBounded = 64;

__global__ void __launch_bounds__(kBounded) BoundedKernel(float* out) {
  moe::cuda::AwaitPrecedingKernels();
  out[threadIdx.x] = 1.0f;
}

// 4 KiB of static shared memory beside the dynamic rows.
__global__ void StaticAndDynamicKernel(float* out) {
  moe::cuda::AwaitPrecedingKernels();
  extern __shared__ float rows[];
  __shared__ float scratch[1024];
  scratch[threadIdx.x] = 1.0f;
  rows[threadIdx.x] = 2.0f;
  __syncthreads();
  out[threadIdx.x] = scratch[threadIdx.x] + rows[threadIdx.x];
}

class EmuChecks : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cudaMalloc(&out_, 1024 * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    ::emu::ResetErrorCount();
  }
  void TearDown() override {
    cudaStreamDestroy(stream_);
    cudaFree(out_);
    ::emu::ResetErrorCount();  // the planted faults are expected: they must not fail the run
  }
  // Emulation errors reported by what ran since the last call.
  int Errors() {
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    const int n = ::emu::ErrorCount();
    ::emu::ResetErrorCount();
    return n;
  }
  float* out_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

TEST_F(EmuChecks, StaticPlusDynamicSharedMemoryPast48KiBNeedsTheOptIn) {
  const size_t dynamic = 45 * 1024;  // under 48 KiB alone, over it with the 4 KiB static
  moe::cuda::Launch(StaticAndDynamicKernel, 1, 256, dynamic, stream_, out_);
  EXPECT_EQ(Errors(), 1) << "static + dynamic shared memory over 48 KiB without the opt-in";
  ASSERT_EQ(cudaFuncSetAttribute(StaticAndDynamicKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(dynamic)),
            cudaSuccess);
  moe::cuda::Launch(StaticAndDynamicKernel, 1, 256, dynamic, stream_, out_);
  EXPECT_EQ(Errors(), 0);
  moe::cuda::Launch(StaticAndDynamicKernel, 1, 256, 40 * 1024, stream_, out_);
  EXPECT_EQ(Errors(), 0);
}

TEST_F(EmuChecks, ABlockLargerThanTheLaunchBoundsIsReported) {
  moe::cuda::Launch(BoundedKernel, 1, 2 * kBounded, 0, stream_, out_);
  EXPECT_EQ(Errors(), 1) << "a block of 128 threads for launch bounds of 64";
  moe::cuda::Launch(BoundedKernel, 1, kBounded, 0, stream_, out_);
  EXPECT_EQ(Errors(), 0);
}

TEST_F(EmuChecks, ALaunchThatFailsWhileCapturingIsAStatusNotAnAbort) {
  moe::cuda::GraphCache graphs;
  const absl::Status captured = graphs.Capture({1, 1}, stream_, [&] {
    moe::cuda::Launch(BoundedKernel, 1, 2048, 0, stream_, out_);  // no block has 2048 threads
    return absl::OkStatus();
  });
  EXPECT_FALSE(captured.ok());
  EXPECT_NE(captured.ToString().find("while capturing"), std::string::npos) << captured;
  EXPECT_EQ(graphs.size(), 0u);
  // The stream left capture mode and works; a good capture still succeeds.
  const absl::Status good = graphs.Capture({1, 2}, stream_, [&] {
    moe::cuda::Launch(BoundedKernel, 1, kBounded, 0, stream_, out_);
    return absl::OkStatus();
  });
  EXPECT_TRUE(good.ok()) << good;
  EXPECT_EQ(Errors(), 0);
}

TEST_F(EmuChecks, ALaunchThatFailsOutsideCaptureAborts) {
  EXPECT_DEATH(moe::cuda::Launch(BoundedKernel, 1, 2048, 0, stream_, out_), "cudaLaunchKernelEx");
}

}  // namespace
