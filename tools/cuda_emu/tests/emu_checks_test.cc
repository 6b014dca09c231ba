// The emulator refuses what a GPU refuses. Each case plants one fault the hardware would
// reject (planted_kernels.cu) and expects the emulator to report it (an EMU ERROR, or the
// error path the real Launch takes), then runs the same launch without the fault and
// expects nothing. Built only over the emulator: on a GPU these launches would just fail.
#include <string>

#include "gtest/gtest.h"
#include "runtime/cuda/graph_cache.h"
#include "tools/cuda_emu/tests/planted_kernels.h"

namespace emu_checks {
namespace {

class EmuChecks : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cudaMalloc(&out_, 1024 * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    TakeEmulationErrors(stream_);
  }
  void TearDown() override {
    TakeEmulationErrors(stream_);  // the planted faults are expected: they must not fail the run
    cudaStreamDestroy(stream_);
    cudaFree(out_);
  }
  int Errors() { return TakeEmulationErrors(stream_); }
  float* out_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

TEST_F(EmuChecks, StaticPlusDynamicSharedMemoryPast48KiBNeedsTheOptIn) {
  const size_t dynamic = 45 * 1024;  // under 48 KiB alone, over it with the 4 KiB static
  LaunchStaticAndDynamic(dynamic, out_, stream_);
  EXPECT_EQ(Errors(), 1) << "static + dynamic shared memory over 48 KiB without the opt-in";
  ASSERT_EQ(OptInDynamicShared(static_cast<int>(dynamic)), cudaSuccess);
  LaunchStaticAndDynamic(dynamic, out_, stream_);
  EXPECT_EQ(Errors(), 0);
  LaunchStaticAndDynamic(40 * 1024, out_, stream_);
  EXPECT_EQ(Errors(), 0);
}

TEST_F(EmuChecks, ABlockLargerThanTheLaunchBoundsIsReported) {
  LaunchBounded(2 * kBounded, out_, stream_);
  EXPECT_EQ(Errors(), 1) << "a block of 128 threads for launch bounds of 64";
  LaunchBounded(kBounded, out_, stream_);
  EXPECT_EQ(Errors(), 0);
}

TEST_F(EmuChecks, ALaunchThatFailsWhileCapturingIsAStatusNotAnAbort) {
  moe::cuda::GraphCache graphs;
  const absl::Status captured = graphs.Capture({1, 1}, stream_, [&] {
    LaunchBounded(2048, out_, stream_);  // no block has 2048 threads
    return absl::OkStatus();
  });
  EXPECT_FALSE(captured.ok());
  EXPECT_NE(captured.ToString().find("while capturing"), std::string::npos) << captured;
  EXPECT_EQ(graphs.size(), 0u);
  // The stream left capture mode and works; a good capture still succeeds.
  const absl::Status good = graphs.Capture({1, 2}, stream_, [&] {
    LaunchBounded(kBounded, out_, stream_);
    return absl::OkStatus();
  });
  EXPECT_TRUE(good.ok()) << good;
  EXPECT_EQ(Errors(), 0);
}

TEST_F(EmuChecks, ALaunchThatFailsOutsideCaptureAborts) {
  EXPECT_DEATH(LaunchBounded(2048, out_, stream_), "cudaLaunchKernelEx");
}

TEST_F(EmuChecks, AGlobalReadBeforeThePdlAwaitIsReported) {
  if (std::string(EMU_BUILD_MODE) != "race") {
    GTEST_SKIP() << "memory accesses are seen by the race build only: tools/cuda_emu/run.sh -m race emu_checks_test";
  }
  float* in = nullptr;
  ASSERT_EQ(cudaMalloc(&in, 64 * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemsetAsync(in, 0, 64 * sizeof(float), stream_), cudaSuccess);
  LaunchCopy(/*read_before_await=*/true, in, out_, stream_);
  EXPECT_EQ(Errors(), 1) << "a global read before AwaitPrecedingKernels";
  LaunchCopy(/*read_before_await=*/false, in, out_, stream_);
  EXPECT_EQ(Errors(), 0);
  cudaFree(in);
}

}  // namespace
}  // namespace emu_checks
