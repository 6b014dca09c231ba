#include "runtime/dist/nccl_communicator.h"

#include <nccl.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "runtime/status_macros.h"

namespace moe::dist {
namespace {

absl::Status NcclError(ncclResult_t result, const char* what) {
  return absl::InternalError(absl::StrCat(what, ": ", ncclGetErrorString(result)));
}

#define NCCL_RETURN_IF_ERROR(expr)                                      \
  do {                                                                  \
    const ncclResult_t moe_nccl_result_ = (expr);                       \
    if (moe_nccl_result_ != ncclSuccess) return NcclError(moe_nccl_result_, #expr); \
  } while (0)

size_t RowBytes(const cuda::DeviceTensor& t) {
  return t.dim(0) == 0 ? 0 : t.nbytes() / t.dim(0);
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(Communicator& host) {
  ncclUniqueId id;
  std::string bytes;
  if (host.Rank() == 0) {
    NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id));
    bytes.assign(reinterpret_cast<const char*>(&id), sizeof(id));
  }
  RETURN_IF_ERROR(host.Broadcast(bytes, 0));
  if (bytes.size() != sizeof(id)) return absl::DataLossError("the NCCL unique id arrived truncated");
  std::memcpy(&id, bytes.data(), sizeof(id));
  ncclComm_t comm = nullptr;
  NCCL_RETURN_IF_ERROR(ncclCommInitRank(&comm, host.Size(), id, host.Rank()));
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(host, comm));
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) ncclCommDestroy(comm_);
}

absl::Status NcclCommunicator::Synchronize(cudaStream_t stream) {
  const absl::Duration timeout = host_.timeout();
  const absl::Time deadline = absl::Now() + timeout;
  for (int polls = 0;; ++polls) {
    const cudaError_t state = cudaStreamQuery(stream);
    if (state == cudaSuccess) return absl::OkStatus();
    if (state != cudaErrorNotReady) {
      return absl::InternalError(absl::StrCat("waiting for the NCCL exchange: ", cudaGetErrorString(state)));
    }
    if (absl::Now() > deadline) {
      Abort();
      host_.Abort(absl::StrCat("the NCCL exchange did not complete within ", absl::FormatDuration(timeout),
                               ": another rank died or hangs"));
    }
    // Steps come back to back: spin a little, then leave the core to others.
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(polls > 100000 ? 1000 : 20));
  }
}

void NcclCommunicator::Abort() {
  if (comm_ != nullptr) ncclCommAbort(comm_);
  comm_ = nullptr;
}

absl::Status NcclCommunicator::AllToAllV(const cuda::DeviceTensor& send, absl::Span<const int64_t> send_rows,
                                         cuda::DeviceTensor& recv, absl::Span<const int64_t> recv_rows,
                                         cudaStream_t stream) {
  const size_t row = RowBytes(send) != 0 ? RowBytes(send) : RowBytes(recv);
  if (static_cast<int>(send_rows.size()) != size_ || static_cast<int>(recv_rows.size()) != size_ ||
      send.dtype() != recv.dtype() || (RowBytes(send) != 0 && RowBytes(recv) != 0 && RowBytes(send) != RowBytes(recv))) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV: ", size_, " counts each way and one row layout"));
  }
  int64_t sent = 0, received = 0;
  for (int r = 0; r < size_; ++r) sent += send_rows[r], received += recv_rows[r];
  if (sent > send.dim(0) || received > recv.dim(0)) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV: ", sent, " rows out of ", send.dim(0), ", ", received,
                                                   " rows into ", recv.dim(0)));
  }
  const auto* src = static_cast<const char*>(send.raw());
  auto* dst = static_cast<char*>(recv.raw());
  NCCL_RETURN_IF_ERROR(ncclGroupStart());
  for (int r = 0; r < size_; ++r) {
    if (send_rows[r] > 0) {
      NCCL_RETURN_IF_ERROR(ncclSend(src, send_rows[r] * row, ncclUint8, r, comm_, stream));
    }
    if (recv_rows[r] > 0) {
      NCCL_RETURN_IF_ERROR(ncclRecv(dst, recv_rows[r] * row, ncclUint8, r, comm_, stream));
    }
    src += send_rows[r] * row;
    dst += recv_rows[r] * row;
  }
  NCCL_RETURN_IF_ERROR(ncclGroupEnd());
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllGather(const cuda::DeviceTensor& send, cuda::DeviceTensor& recv,
                                         cudaStream_t stream) {
  if (recv.nbytes() != send.nbytes() * size_ || recv.dtype() != send.dtype()) {
    return absl::InvalidArgumentError(absl::StrCat("AllGather: recv holds ", recv.nbytes(), " bytes, expected ",
                                                   send.nbytes() * size_));
  }
  NCCL_RETURN_IF_ERROR(ncclAllGather(send.raw(), recv.raw(), send.nbytes(), ncclUint8, comm_, stream));
  return absl::OkStatus();
}

}  // namespace moe::dist
