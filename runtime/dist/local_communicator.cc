// The one-rank communicator: every collective is a copy (or nothing).
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "runtime/dist/communicator.h"

namespace moe::dist {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  int Rank() const override { return 0; }
  int Size() const override { return 1; }
  int LocalRank() const override { return 0; }
  absl::Duration timeout() const override { return absl::InfiniteDuration(); }

  absl::Status AllToAllV(absl::Span<const std::byte> send, absl::Span<const int64_t> send_counts,
                         absl::Span<std::byte> recv, absl::Span<const int64_t> recv_counts) override {
    if (send_counts.size() != 1 || recv_counts.size() != 1 || send_counts[0] != recv_counts[0] ||
        send_counts[0] > static_cast<int64_t>(send.size()) || recv_counts[0] > static_cast<int64_t>(recv.size())) {
      return absl::InvalidArgumentError("AllToAllV on one rank: one count each way, equal, within the buffers");
    }
    if (send_counts[0] > 0) std::memcpy(recv.data(), send.data(), send_counts[0]);
    return absl::OkStatus();
  }
  absl::Status AllGather(absl::Span<const std::byte> send, absl::Span<std::byte> recv) override {
    if (recv.size() != send.size()) {
      return absl::InvalidArgumentError(absl::StrCat("AllGather: recv holds ", recv.size(), " bytes, expected ", send.size()));
    }
    if (!send.empty()) std::memcpy(recv.data(), send.data(), send.size());
    return absl::OkStatus();
  }
  absl::Status Broadcast(std::string&, int root) override {
    return root == 0 ? absl::OkStatus() : absl::InvalidArgumentError(absl::StrCat("Broadcast: no rank ", root));
  }
  absl::Status AllReduce(absl::Span<int64_t>, ReduceOp) override { return absl::OkStatus(); }
  absl::Status Barrier(absl::Duration) override { return absl::OkStatus(); }
  absl::Status Gather(const std::string& mine, std::vector<std::string>& all, int root) override {
    if (root != 0) return absl::InvalidArgumentError(absl::StrCat("Gather: no rank ", root));
    all.assign(1, mine);
    return absl::OkStatus();
  }
  [[noreturn]] void Abort(const std::string& reason) override {
    std::cerr << "rank 0: aborting: " << reason << std::endl;
    RunAbortHandlers(reason);
    std::abort();
  }
};

}  // namespace

std::unique_ptr<Communicator> MakeLocalCommunicator() { return std::make_unique<LocalCommunicator>(); }

}  // namespace moe::dist
