// NcclCommunicator: the device side of a group of ranks, one GPU each.
//
// Its collectives take device tensors and are enqueued on a CUDA stream (the step's
// compute stream): nothing in them waits for the host, so they can be captured in a CUDA
// graph. The NCCL unique id travels over the group's host communicator (MPI) when it is
// created, as nccl-tests does; the host communicator keeps carrying the engine's control
// messages (the relay, "any work?").
//
//   ASSIGN_OR_RETURN(auto nccl, dist::NcclCommunicator::Create(*mpi));   // every rank
//   RETURN_IF_ERROR(nccl->AllToAllV(xs, send_rows, remote_xs, recv_rows, stream));
#pragma once

#include <cstdint>
#include <memory>

#include <cuda_runtime.h>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/dist/communicator.h"

typedef struct ncclComm* ncclComm_t;

namespace moe::dist {

class NcclCommunicator {
 public:
  // Collective over `host`'s ranks: every rank calls it, on the device it will use.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(Communicator& host);
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int Rank() const { return rank_; }
  int Size() const { return size_; }

  // send_rows[r] rows of `send` (dimension 0, in rank order) go to rank r; recv_rows[r] rows
  // from rank r land in `recv` (in rank order). Row counts must agree pairwise, and both
  // tensors have the same dtype and row size.
  absl::Status AllToAllV(const cuda::DeviceTensor& send, absl::Span<const int64_t> send_rows,
                         cuda::DeviceTensor& recv, absl::Span<const int64_t> recv_rows, cudaStream_t stream);
  // Every rank's `send` into `recv` [Size() * send rows, ...], in rank order.
  absl::Status AllGather(const cuda::DeviceTensor& send, cuda::DeviceTensor& recv, cudaStream_t stream);
  // Waits for `stream`, where this communicator's work is queued, within the host
  // communicator's timeout. Past it a peer died or hangs: the NCCL work is aborted
  // (ncclCommAbort) and then the group (the host communicator's Abort, which runs its
  // handlers and names why), so a rank never waits on a dead peer's GPU for ever.
  absl::Status Synchronize(cudaStream_t stream);
  // Ends the group's NCCL work now (a rank died or hangs): what is in flight returns errors.
  void Abort();

 private:
  NcclCommunicator(Communicator& host, ncclComm_t comm) : host_(host), comm_(comm), rank_(host.Rank()), size_(host.Size()) {}
  Communicator& host_;
  ncclComm_t comm_;
  int rank_, size_;
};

}  // namespace moe::dist
