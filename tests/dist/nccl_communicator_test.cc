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
#include "tests/dist/rank_gpu.h"

namespace moe::dist {
namespace {

constexpr int64_t kRow = 5;  // floats per row

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MOE_USE_RANK_GPU();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    auto nccl = NcclCommunicator::Create(testing::Group());
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
    const int me = testing::Group().Rank(), R = testing::Group().Size();
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
    const int me = testing::Group().Rank(), R = testing::Group().Size();
    std::vector<int64_t> send_n(R), recv_n(R);
    int64_t total = 0;
    for (int r = 0; r < R; ++r) send_n[r] = Rows(me, r) * kRow, recv_n[r] = Rows(r, me) * kRow, total += Rows(r, me);
    Tensor recv = Tensor::Empty(DType::kF32, {total, kRow});
    EXPECT_TRUE(AllToAllV<float>(testing::Group(), absl::MakeConstSpan(send.data<float>(), send.numel()), send_n,
                                 absl::MakeSpan(recv.data<float>(), recv.numel()), recv_n)
                    .ok());
    return recv;
  }

  std::vector<int64_t> SendCounts() const {
    std::vector<int64_t> n(testing::Group().Size());
    for (int r = 0; r < testing::Group().Size(); ++r) n[r] = Rows(testing::Group().Rank(), r);
    return n;
  }
  std::vector<int64_t> RecvCounts() const {
    std::vector<int64_t> n(testing::Group().Size());
    for (int r = 0; r < testing::Group().Size(); ++r) n[r] = Rows(r, testing::Group().Rank());
    return n;
  }

  static void ExpectSame(const Tensor& want, const Tensor& got) {
    ASSERT_EQ(want.numel(), got.numel());
    for (int64_t i = 0; i < want.numel(); ++i) {
      ASSERT_EQ(want.data<float>()[i], got.data<float>()[i]) << "element " << i << " on rank " << testing::Group().Rank();
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
  const int R = testing::Group().Size();
  Tensor mine = Tensor::Empty(DType::kF32, {3, kRow});
  for (int64_t i = 0; i < mine.numel(); ++i) mine.data<float>()[i] = testing::Group().Rank() * 100.0f + i;
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
