// The MPI communicator: one rank per process, over MPI_COMM_WORLD.
//
// Collectives are MPI's non-blocking ones, completed by polling under a deadline, so that a
// peer that died or hangs ends the group instead of blocking every rank for ever. While a
// rank waits it answers pings; the rank whose deadline passes pings every other rank, and
// its MPI_Abort line names the collective and the ranks that did not answer. The poll backs
// off from spinning to short sleeps, so idle ranks leave the cores to others (CI runs four
// ranks on two cores).
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "runtime/dist/communicator.h"

namespace moe::dist {
namespace {

MPI_Op ToMpi(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(CommunicatorOptions options, bool owns_mpi) : options_(options), owns_mpi_(owns_mpi) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    MPI_Comm host;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &host);
    MPI_Comm_rank(host, &local_rank_);
    MPI_Comm_free(&host);
  }
  ~MpiCommunicator() override {
    if (owns_mpi_) MPI_Finalize();
  }

  int Rank() const override { return rank_; }
  int Size() const override { return size_; }
  int LocalRank() const override { return local_rank_; }
  absl::Duration timeout() const override { return options_.timeout; }

  absl::Status AllToAllV(absl::Span<const std::byte> send, absl::Span<const int64_t> send_counts,
                         absl::Span<std::byte> recv, absl::Span<const int64_t> recv_counts) override {
    if (static_cast<int>(send_counts.size()) != size_ || static_cast<int>(recv_counts.size()) != size_) {
      return absl::InvalidArgumentError(absl::StrCat("AllToAllV: expected ", size_, " counts each way"));
    }
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    int64_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      if (send_counts[r] > kMaxCount || recv_counts[r] > kMaxCount || so > kMaxCount || ro > kMaxCount) {
        return absl::InvalidArgumentError("AllToAllV: over 2 GiB in one exchange");
      }
      sc[r] = static_cast<int>(send_counts[r]), sd[r] = static_cast<int>(so), so += send_counts[r];
      rc[r] = static_cast<int>(recv_counts[r]), rd[r] = static_cast<int>(ro), ro += recv_counts[r];
    }
    if (so > static_cast<int64_t>(send.size()) || ro > static_cast<int64_t>(recv.size())) {
      return absl::InvalidArgumentError("AllToAllV: counts exceed the buffers");
    }
    MPI_Request req;
    MPI_Ialltoallv(send.data(), sc.data(), sd.data(), MPI_BYTE, recv.data(), rc.data(), rd.data(), MPI_BYTE,
                   MPI_COMM_WORLD, &req);
    Wait(req, "AllToAllV");
    return absl::OkStatus();
  }

  absl::Status AllGather(absl::Span<const std::byte> send, absl::Span<std::byte> recv) override {
    if (recv.size() != send.size() * size_ || send.size() > kMaxCount) {
      return absl::InvalidArgumentError(absl::StrCat("AllGather: recv holds ", recv.size(), " bytes, expected ",
                                                     send.size() * size_));
    }
    MPI_Request req;
    MPI_Iallgather(send.data(), static_cast<int>(send.size()), MPI_BYTE, recv.data(),
                   static_cast<int>(send.size()), MPI_BYTE, MPI_COMM_WORLD, &req);
    Wait(req, "AllGather");
    return absl::OkStatus();
  }

  absl::Status Broadcast(std::string& bytes, int root) override {
    if (root < 0 || root >= size_) return absl::InvalidArgumentError(absl::StrCat("Broadcast: no rank ", root));
    int64_t size = static_cast<int64_t>(bytes.size());
    MPI_Request req;
    MPI_Ibcast(&size, 1, MPI_INT64_T, root, MPI_COMM_WORLD, &req);
    Wait(req, "Broadcast");
    if (size > kMaxCount) return absl::InvalidArgumentError("Broadcast: over 2 GiB");
    bytes.resize(size);
    if (size == 0) return absl::OkStatus();
    MPI_Ibcast(bytes.data(), static_cast<int>(size), MPI_BYTE, root, MPI_COMM_WORLD, &req);
    Wait(req, "Broadcast");
    return absl::OkStatus();
  }

  absl::Status AllReduce(absl::Span<int64_t> values, ReduceOp op) override {
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_INT64_T, ToMpi(op),
                   MPI_COMM_WORLD, &req);
    Wait(req, "AllReduce");
    return absl::OkStatus();
  }

  absl::Status Barrier(absl::Duration timeout) override {
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    Wait(req, "Barrier", timeout);
    return absl::OkStatus();
  }

  absl::Status Gather(const std::string& mine, std::vector<std::string>& all, int root) override {
    if (root < 0 || root >= size_) return absl::InvalidArgumentError(absl::StrCat("Gather: no rank ", root));
    if (mine.size() > kMaxCount) return absl::InvalidArgumentError("Gather: over 2 GiB");
    all.clear();
    if (rank_ != root) {
      MPI_Request req;
      MPI_Issend(mine.data(), static_cast<int>(mine.size()), MPI_BYTE, root, kGatherTag, MPI_COMM_WORLD, &req);
      Wait(req, "Gather (send to the root)");
      return absl::OkStatus();
    }
    all.resize(size_);
    all[root] = mine;
    // Sizes are not known in advance: probe each rank's message, then receive it.
    std::vector<bool> done(size_, false);
    done[root] = true;
    int left = size_ - 1;
    const absl::Time deadline = absl::Now() + options_.timeout;
    for (int polls = 0; left > 0; ++polls) {
      for (int r = 0; r < size_; ++r) {
        if (done[r]) continue;
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(r, kGatherTag, MPI_COMM_WORLD, &flag, &status);
        if (!flag) continue;
        int count = 0;
        MPI_Get_count(&status, MPI_BYTE, &count);
        all[r].resize(count);
        MPI_Recv(all[r].data(), count, MPI_BYTE, r, kGatherTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        done[r] = true;
        --left;
      }
      if (left > 0 && absl::Now() > deadline) {
        std::vector<int> missing;
        for (int r = 0; r < size_; ++r) {
          if (!done[r]) missing.push_back(r);
        }
        // Here the silent ranks are known: they never sent.
        Abort(absl::StrCat("Gather did not complete within ", absl::FormatDuration(options_.timeout), ": rank ",
                           absl::StrJoin(missing, ", "), " does not answer (died or hangs)"));
      }
      if (left > 0) {
        AnswerPings();
        Backoff(polls);
      }
    }
    return absl::OkStatus();
  }

  [[noreturn]] void Abort(const std::string& reason) override {
    std::cerr << "rank " << rank_ << ": aborting the group: " << reason << std::endl;
    RunAbortHandlers(absl::StrCat("rank ", rank_, ": ", reason));
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();
  }

 private:
  static constexpr int64_t kMaxCount = 0x7fffffff;
  static constexpr int kGatherTag = 7001, kPingTag = 7002, kPongTag = 7003;

  // A waiting rank is alive: it answers whoever asks.
  void AnswerPings() {
    for (int flag = 1; flag;) {
      MPI_Status status;
      MPI_Iprobe(MPI_ANY_SOURCE, kPingTag, MPI_COMM_WORLD, &flag, &status);
      if (!flag) break;
      char byte;
      MPI_Recv(&byte, 1, MPI_CHAR, status.MPI_SOURCE, kPingTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Request req;
      MPI_Isend(&kPong, 1, MPI_CHAR, status.MPI_SOURCE, kPongTag, MPI_COMM_WORLD, &req);
      MPI_Request_free(&req);
    }
  }

  // The ranks that do not answer a ping within two seconds: dead or hung.
  std::vector<int> Unresponsive() {
    std::vector<bool> answered(size_, false);
    answered[rank_] = true;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      MPI_Request req;
      MPI_Isend(&kPing, 1, MPI_CHAR, r, kPingTag, MPI_COMM_WORLD, &req);
      MPI_Request_free(&req);
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(2);
    while (absl::Now() < deadline) {
      AnswerPings();
      int flag = 0;
      MPI_Status status;
      MPI_Iprobe(MPI_ANY_SOURCE, kPongTag, MPI_COMM_WORLD, &flag, &status);
      if (flag) {
        char byte;
        MPI_Recv(&byte, 1, MPI_CHAR, status.MPI_SOURCE, kPongTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        answered[status.MPI_SOURCE] = true;
        if (std::all_of(answered.begin(), answered.end(), [](bool a) { return a; })) break;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    std::vector<int> silent;
    for (int r = 0; r < size_; ++r) {
      if (!answered[r]) silent.push_back(r);
    }
    return silent;
  }
  static constexpr char kPing = 1, kPong = 2;

  // Spin briefly (steps come back to back), then yield, then sleep.
  static void Backoff(int polls) {
    if (polls < 200) return;
    if (polls < 2000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(polls < 20000 ? 50 : 1000));
    }
  }

  void Wait(MPI_Request& req, const char* what, absl::Duration timeout = absl::ZeroDuration()) {
    if (timeout == absl::ZeroDuration()) timeout = options_.timeout;
    const absl::Time deadline = absl::Now() + timeout;
    for (int polls = 0;; ++polls) {
      int flag = 0;
      MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
      if (flag) return;
      if ((polls & 63) == 0 && absl::Now() > deadline) {
        const std::vector<int> silent = Unresponsive();
        Abort(absl::StrCat(what, " did not complete within ", absl::FormatDuration(timeout), ": ",
                           silent.empty() ? "every rank answers, but one never joined it"
                                          : absl::StrCat("rank ", absl::StrJoin(silent, ", "),
                                                         " does not answer (died or hangs)")));
      }
      AnswerPings();
      Backoff(polls);
    }
  }

  CommunicatorOptions options_;
  bool owns_mpi_;
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator(const CommunicatorOptions& options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
      return absl::UnavailableError("MPI_Init_thread failed");
    }
    if (provided < MPI_THREAD_SERIALIZED) {
      return absl::FailedPreconditionError("this MPI cannot be called from a thread other than main");
    }
  }
  return std::unique_ptr<Communicator>(new MpiCommunicator(options, !initialized));
}

}  // namespace moe::dist
