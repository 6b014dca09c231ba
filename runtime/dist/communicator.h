// Communicator: the collectives that the ranks of one serving group run together.
//
// Every rank calls the same collectives in the same order; each returns once its part is
// done. Buffers are host memory. A collective that cannot complete (a peer died or hangs)
// returns an error or aborts the whole group within the communicator's timeout, naming
// what it waited for; it never hangs for ever.
//
//   std::unique_ptr<Communicator> comm = MakeLocalCommunicator();   // or MakeMpiCommunicator
//   std::vector<int64_t> any = {has_work ? 1 : 0};
//   RETURN_IF_ERROR(comm->AllReduce(absl::MakeSpan(any), ReduceOp::kMax));
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace moe::dist {

enum class ReduceOp { kSum, kMax, kMin };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int Rank() const = 0;
  virtual int Size() const = 0;
  // This rank among the group's ranks on its host (which GPU of the host is its own).
  virtual int LocalRank() const = 0;
  // How long a collective may wait for the others before the group is ended.
  virtual absl::Duration timeout() const = 0;

  // Sends send_counts[r] bytes of `send` (laid out in rank order) to each rank r and
  // receives recv_counts[r] bytes from each rank r into `recv` (in rank order). The counts
  // must agree pairwise: exchange them first (AllToAll of one count per rank).
  virtual absl::Status AllToAllV(absl::Span<const std::byte> send,
                                 absl::Span<const int64_t> send_counts, absl::Span<std::byte> recv,
                                 absl::Span<const int64_t> recv_counts) = 0;
  // Every rank's `send` (the same size on every rank) into `recv` [Size() * send.size()].
  virtual absl::Status AllGather(absl::Span<const std::byte> send, absl::Span<std::byte> recv) = 0;
  // `bytes` of rank `root` to every rank; the size travels too.
  virtual absl::Status Broadcast(std::string& bytes, int root) = 0;
  // Element-wise over ranks, in place.
  virtual absl::Status AllReduce(absl::Span<int64_t> values, ReduceOp op) = 0;
  // Waits up to `timeout` (not the communicator's own: ranks may load a model for minutes).
  virtual absl::Status Barrier(absl::Duration timeout) = 0;
  // Point to point, for the relay between rank 0 and the others: every rank's `mine` to
  // `root`, which gets them in rank order in `all` (left empty on the other ranks). On a
  // timeout the root's error names the ranks that did not send.
  virtual absl::Status Gather(const std::string& mine, std::vector<std::string>& all, int root) = 0;
  // Ends every rank of the group now (a rank that cannot go on), after logging `reason` and
  // running the abort handlers.
  [[noreturn]] virtual void Abort(const std::string& reason) = 0;

  // Runs on the aborting rank, in the order added, before the group ends: a server tells its
  // clients. Add handlers before the first step; they must not call collectives.
  void AddAbortHandler(std::function<void(const std::string& reason)> handler) {
    abort_handlers_.push_back(std::move(handler));
  }

 protected:
  void RunAbortHandlers(const std::string& reason) {
    for (const auto& handler : abort_handlers_) handler(reason);
  }

 private:
  std::vector<std::function<void(const std::string&)>> abort_handlers_;
};

// One rank, no copies but the one from send to recv.
std::unique_ptr<Communicator> MakeLocalCommunicator();

struct CommunicatorOptions {
  // A collective still waiting after this long aborts the group, naming what it waited for.
  absl::Duration timeout = absl::Seconds(60);
};

// True when this process was started by an MPI launcher (mpirun, srun --mpi=pmix, an MPIJob).
bool LaunchedByMpi();

// The MPI world when LaunchedByMpi() (an error if this build has no MPI), else one local rank.
absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(const CommunicatorOptions& options = {});

// Typed forms of the byte collectives, for trivially copyable elements.
template <typename T>
absl::Status AllGather(Communicator& comm, absl::Span<const T> send, std::vector<T>& recv) {
  static_assert(std::is_trivially_copyable_v<T>);
  recv.resize(send.size() * comm.Size());
  return comm.AllGather(absl::MakeConstSpan(reinterpret_cast<const std::byte*>(send.data()), send.size() * sizeof(T)),
                        absl::MakeSpan(reinterpret_cast<std::byte*>(recv.data()), recv.size() * sizeof(T)));
}

// counts are in elements of T.
template <typename T>
absl::Status AllToAllV(Communicator& comm, absl::Span<const T> send, absl::Span<const int64_t> send_counts,
                       absl::Span<T> recv, absl::Span<const int64_t> recv_counts) {
  static_assert(std::is_trivially_copyable_v<T>);
  std::vector<int64_t> send_bytes(send_counts.begin(), send_counts.end());
  std::vector<int64_t> recv_bytes(recv_counts.begin(), recv_counts.end());
  for (int64_t& n : send_bytes) n *= sizeof(T);
  for (int64_t& n : recv_bytes) n *= sizeof(T);
  return comm.AllToAllV(
      absl::MakeConstSpan(reinterpret_cast<const std::byte*>(send.data()), send.size() * sizeof(T)), send_bytes,
      absl::MakeSpan(reinterpret_cast<std::byte*>(recv.data()), recv.size() * sizeof(T)), recv_bytes);
}

}  // namespace moe::dist
