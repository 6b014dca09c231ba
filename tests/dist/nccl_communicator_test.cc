// The NCCL communicator under mpirun: device all-to-all and all-gather move exactly what the
// MPI communicator moves on the host, uneven counts and empty ones included, and an
// exchange captured in a CUDA graph replays with new contents. Built for GPUs (one per
// rank, skipped with fewer) and over the CUDA emulator, whose NCCL runs over MPI.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/cuda/graph_cache.h"
#include "runtime/dist/communicator.h"
#include "runtime/dist/nccl_communicator.h"

namespace moe::dist {
namespace {

Communicator* g_host = nullptr;

// This process's rank among the ranks on its node, as the launcher tells it.
int LocalRank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "PMIX_LOCAL_RANK"}) {
    if (const char* v = std::getenv(var); v != nullptr) return std::atoi(v);
  }
  return 0;
}
constexpr int64_t kRow = 5;  // floats per row

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::HasDevice()) GTEST_SKIP() << cuda::NoDeviceReason() << ": this test needs a GPU per rank";
    // One GPU per rank of this node; the CUDA emulator gives every process a device of its own.
    int devices = 0;
    cudaDeviceProp prop{};
    ASSERT_EQ(cudaGetDeviceCount(&devices), cudaSuccess);
    ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
    const bool emulated = std::string(prop.name).rfind("EMU", 0) == 0;
    const int device = emulated ? 0 : LocalRank();
    if (device >= devices) GTEST_SKIP() << "needs one GPU per rank: local rank " << device << " of " << devices << " GPUs";
    ASSERT_EQ(cudaSetDevice(device), cudaSuccess);
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    auto nccl = NcclCommunicator::Create(*g_host);
    ASSERT_TRUE(nccl.ok()) << nccl.status();
    nccl_ = *std::move(nccl);
  }
  void TearDown() override {
    nccl_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  // Rows rank `from` sends rank `to`: 0 to 2, so some pairs send nothing.
  static int64_t Rows(int from, int to) { return (from + 2 * to + 1) % 3; }

  // This rank's send rows, in destination order, valued by (this rank, destination, row, column).
  Tensor SendRows(int salt) const {
    const int me = g_host->Rank(), R = g_host->Size();
    int64_t n = 0;
    for (int q = 0; q < R; ++q) n += Rows(me, q);
    Tensor t = Tensor::Empty(DType::kF32, {n, kRow});
    float* p = t.data<float>();
    for (int q = 0; q < R; ++q) {
      for (int64_t i = 0; i < Rows(me, q); ++i) {
        for (int64_t d = 0; d < kRow; ++d) *p++ = salt * 1e4f + me * 1000 + q * 100 + i * 10 + d * 0.5f;
      }
    }
    return t;
  }

  // What the MPI communicator delivers for the same rows.
  Tensor HostAllToAllV(const Tensor& send) const {
    const int me = g_host->Rank(), R = g_host->Size();
    std::vector<int64_t> send_n(R), recv_n(R);
    int64_t total = 0;
    for (int r = 0; r < R; ++r) send_n[r] = Rows(me, r) * kRow, recv_n[r] = Rows(r, me) * kRow, total += Rows(r, me);
    Tensor recv = Tensor::Empty(DType::kF32, {total, kRow});
    EXPECT_TRUE(AllToAllV<float>(*g_host, absl::MakeConstSpan(send.data<float>(), send.numel()), send_n,
                                 absl::MakeSpan(recv.data<float>(), recv.numel()), recv_n)
                    .ok());
    return recv;
  }

  std::vector<int64_t> SendCounts() const {
    std::vector<int64_t> n(g_host->Size());
    for (int r = 0; r < g_host->Size(); ++r) n[r] = Rows(g_host->Rank(), r);
    return n;
  }
  std::vector<int64_t> RecvCounts() const {
    std::vector<int64_t> n(g_host->Size());
    for (int r = 0; r < g_host->Size(); ++r) n[r] = Rows(r, g_host->Rank());
    return n;
  }

  static void ExpectSame(const Tensor& want, const Tensor& got) {
    ASSERT_EQ(want.numel(), got.numel());
    for (int64_t i = 0; i < want.numel(); ++i) {
      ASSERT_EQ(want.data<float>()[i], got.data<float>()[i]) << "element " << i << " on rank " << g_host->Rank();
    }
  }

  cudaStream_t stream_ = nullptr;
  std::unique_ptr<NcclCommunicator> nccl_;
};

TEST_F(NcclCommunicatorTest, AllToAllVMovesWhatMpiMoves) {
  const Tensor send = SendRows(1);
  auto d_send = cuda::DeviceTensor::FromHost(send, DType::kF32);
  ASSERT_TRUE(d_send.ok());
  const Tensor want = HostAllToAllV(send);
  auto d_recv = cuda::DeviceTensor::Empty(DType::kF32, {want.dim(0), kRow});
  ASSERT_TRUE(d_recv.ok());
  ASSERT_TRUE(d_recv->Poison(stream_).ok());
  ASSERT_TRUE(nccl_->AllToAllV(*d_send, SendCounts(), *d_recv, RecvCounts(), stream_).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  auto got = d_recv->ToHost(DType::kF32);
  ASSERT_TRUE(got.ok());
  ExpectSame(want, *got);
}

TEST_F(NcclCommunicatorTest, AllGatherGathersInRankOrder) {
  const int R = g_host->Size();
  Tensor mine = Tensor::Empty(DType::kF32, {3, kRow});
  for (int64_t i = 0; i < mine.numel(); ++i) mine.data<float>()[i] = g_host->Rank() * 100.0f + i;
  auto d_mine = cuda::DeviceTensor::FromHost(mine, DType::kF32);
  auto d_all = cuda::DeviceTensor::Empty(DType::kF32, {3 * R, kRow});
  ASSERT_TRUE(d_mine.ok() && d_all.ok());
  ASSERT_TRUE(nccl_->AllGather(*d_mine, *d_all, stream_).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  auto got = d_all->ToHost(DType::kF32);
  ASSERT_TRUE(got.ok());
  for (int r = 0; r < R; ++r) {
    for (int64_t i = 0; i < mine.numel(); ++i) EXPECT_EQ(got->data<float>()[r * mine.numel() + i], r * 100.0f + i);
  }
}

TEST_F(NcclCommunicatorTest, AnExchangeCapturedInAGraphReplaysWithNewContents) {
  Tensor send = SendRows(2);
  auto d_send = cuda::DeviceTensor::FromHost(send, DType::kF32);
  ASSERT_TRUE(d_send.ok());
  int64_t total = 0;
  for (int64_t n : RecvCounts()) total += n;
  auto d_recv = cuda::DeviceTensor::Empty(DType::kF32, {total, kRow});
  ASSERT_TRUE(d_recv.ok());
  cuda::GraphCache graphs;
  const absl::Status captured = graphs.Capture({0, 0}, stream_, [&] {
    return nccl_->AllToAllV(*d_send, SendCounts(), *d_recv, RecvCounts(), stream_);
  });
  ASSERT_TRUE(captured.ok()) << captured;
  for (int salt : {3, 4}) {
    send = SendRows(salt);
    ASSERT_EQ(cudaMemcpy(d_send->raw(), send.raw(), send.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_TRUE(graphs.Launch(*graphs.Find({0, 0}), stream_).ok());
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    auto got = d_recv->ToHost(DType::kF32);
    ASSERT_TRUE(got.ok());
    ExpectSame(HostAllToAllV(send), *got);
  }
}

}  // namespace
}  // namespace moe::dist

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto host = moe::dist::MakeCommunicator({.timeout = absl::Seconds(60)});
  if (!host.ok()) {
    std::fprintf(stderr, "%s\n", std::string(host.status().message()).c_str());
    return 1;
  }
  moe::dist::g_host = host->get();
  if ((*host)->Rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  std::vector<int64_t> any = {failed};
  (void)(*host)->AllReduce(absl::MakeSpan(any), moe::dist::ReduceOp::kMax);
  return any[0] != 0 ? 1 : 0;
}
