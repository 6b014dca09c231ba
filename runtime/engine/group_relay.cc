#include "runtime/engine/group_relay.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/engine/wire.h"
#include "runtime/status_macros.h"

namespace moe {
namespace {

enum class Record : uint8_t { kDelta = 1, kFinal = 2 };

}  // namespace

double LoadImbalance(const std::vector<RankLoad>& ranks) {
  int64_t total = 0, most = 0;
  for (const RankLoad& r : ranks) {
    total += r.running + r.waiting;
    most = std::max<int64_t>(most, r.running + r.waiting);
  }
  return total == 0 ? 1.0 : double(most) * ranks.size() / total;
}

// Runs a relayed request's outputs into the rank's outbox, tagged with its submission.
class GroupRelay::RelaySink final : public OutputSink {
 public:
  RelaySink(std::string& outbox, uint64_t submission) : outbox_(outbox), submission_(submission) {}
  void OnDelta(const OutputDelta& delta) override { Start(Record::kDelta, [&](WireWriter& w) { PutDelta(w, delta); }); }
  void OnFinal(const FinalOutput& final) override { Start(Record::kFinal, [&](WireWriter& w) { PutFinal(w, final); }); }

 private:
  // One record: its kind, the submission, then what `put` writes.
  template <typename Put>
  void Start(Record kind, const Put& put) {
    WireWriter w;
    w.Put(static_cast<uint8_t>(kind));
    w.Put(submission_);
    put(w);
    outbox_ += w.bytes();
  }

  std::string& outbox_;
  const uint64_t submission_;
};

GroupRelay::GroupRelay(dist::Communicator& comm, int block_size)
    : comm_(comm), block_size_(block_size), loads_(comm.Size()) {}

int GroupRelay::Place(const Request& request) {
  int best = 0;
  for (int r = 1; r < comm_.Size(); ++r) {
    const RankLoad& a = loads_[r];
    const RankLoad& b = loads_[best];
    if (a.free_blocks > b.free_blocks ||
        (a.free_blocks == b.free_blocks && a.running + a.waiting < b.running + b.waiting)) {
      best = r;
    }
  }
  // Until that rank reports again, count what this request will take there.
  const int prompt_blocks = (static_cast<int>(request.prompt.size()) + block_size_ - 1) / block_size_;
  loads_[best].free_blocks -= prompt_blocks * request.sampling.n;
  loads_[best].waiting += request.sampling.n;
  return best;
}

absl::StatusOr<GroupRelay::Control> GroupRelay::ExchangeControl(std::vector<Submission> submissions,
                                                                std::vector<AbortOrder> aborts,
                                                                bool stopping) {
  Control control;
  std::string message;
  if (comm_.Rank() == 0) {
    WireWriter w;
    w.Put<uint8_t>(stopping);
    std::vector<std::pair<int, const Submission*>> remote;
    for (Submission& s : submissions) {
      const int rank = Place(*s.request);
      if (rank == 0) {
        control.admit.push_back(std::move(s));
        continue;
      }
      placed_on_[s.number] = rank;
      relayed_[s.number] = {.request_id = s.request->id, .sink = s.sink, .unfinished = s.request->sampling.n,
                            .finished = std::vector<bool>(s.request->sampling.n, false)};
      remote.emplace_back(rank, &s);
    }
    w.Put<uint64_t>(remote.size());
    for (const auto& [rank, s] : remote) {
      w.Put<int32_t>(rank);
      w.Put(s->number);
      w.Put(s->submitted);
      PutRequest(w, *s->request);
    }
    std::vector<std::pair<int, const AbortOrder*>> remote_aborts;
    for (const AbortOrder& a : aborts) {
      auto it = placed_on_.find(a.submission);
      if (it == placed_on_.end()) {
        control.aborts.push_back(a);  // here, or finished already: the engine tells which
      } else {
        remote_aborts.emplace_back(it->second, &a);
      }
    }
    w.Put<uint64_t>(remote_aborts.size());
    for (const auto& [rank, a] : remote_aborts) {
      w.Put<int32_t>(rank);
      w.Put(a->request_id);
      w.Put(a->submission);
    }
    message = std::move(w.bytes());
  }
  RETURN_IF_ERROR(comm_.Broadcast(message, 0));
  WireReader r(message);
  ASSIGN_OR_RETURN(const uint8_t stop, r.Get<uint8_t>());
  control.stop = stop != 0;
  ASSIGN_OR_RETURN(const uint64_t placed, r.Get<uint64_t>());
  for (uint64_t i = 0; i < placed; ++i) {
    ASSIGN_OR_RETURN(const int32_t rank, r.Get<int32_t>());
    ASSIGN_OR_RETURN(const uint64_t number, r.Get<uint64_t>());
    ASSIGN_OR_RETURN(const absl::Time submitted, r.GetTime());
    ASSIGN_OR_RETURN(Request request, GetRequest(r));
    if (rank != comm_.Rank()) continue;
    control.admit.push_back({.number = number,
                             .request = std::make_shared<const Request>(std::move(request)),
                             .sink = std::make_shared<RelaySink>(outbox_, number),
                             .submitted = submitted});
  }
  ASSIGN_OR_RETURN(const uint64_t num_aborts, r.Get<uint64_t>());
  for (uint64_t i = 0; i < num_aborts; ++i) {
    ASSIGN_OR_RETURN(const int32_t rank, r.Get<int32_t>());
    ASSIGN_OR_RETURN(std::string id, r.GetString());
    ASSIGN_OR_RETURN(const uint64_t submission, r.Get<uint64_t>());
    if (rank == comm_.Rank()) control.aborts.push_back({std::move(id), submission});
  }
  if (!r.empty()) return absl::DataLossError("control message: trailing bytes");
  return control;
}

absl::StatusOr<bool> GroupRelay::AnyWork(bool mine) {
  std::vector<int64_t> any = {mine ? 1 : 0};
  RETURN_IF_ERROR(comm_.AllReduce(absl::MakeSpan(any), dist::ReduceOp::kMax));
  return any[0] != 0;
}

absl::StatusOr<std::vector<AbortOrder>> GroupRelay::ExchangeOutputs(const RankLoad& mine) {
  WireWriter w;
  w.Put(mine.running), w.Put(mine.waiting), w.Put(mine.free_blocks), w.Put(mine.total_blocks);
  w.Put(mine.steps), w.Put(mine.expert_rows_sent), w.Put(mine.expert_rows_received);
  w.Put(std::string_view(outbox_));
  outbox_.clear();
  std::vector<std::string> all;
  RETURN_IF_ERROR(comm_.Gather(w.bytes(), all, 0));
  std::vector<AbortOrder> finished;
  if (comm_.Rank() != 0) return finished;
  for (int rank = 0; rank < comm_.Size(); ++rank) {
    WireReader r(all[rank]);
    RankLoad& load = loads_[rank];
    ASSIGN_OR_RETURN(load.running, r.Get<int>());
    ASSIGN_OR_RETURN(load.waiting, r.Get<int>());
    ASSIGN_OR_RETURN(load.free_blocks, r.Get<int>());
    ASSIGN_OR_RETURN(load.total_blocks, r.Get<int>());
    ASSIGN_OR_RETURN(load.steps, r.Get<int64_t>());
    ASSIGN_OR_RETURN(load.expert_rows_sent, r.Get<int64_t>());
    ASSIGN_OR_RETURN(load.expert_rows_received, r.Get<int64_t>());
    ASSIGN_OR_RETURN(const std::string outputs, r.GetString());
    RETURN_IF_ERROR(Deliver(rank, outputs, finished));
  }
  return finished;
}

void GroupRelay::FailRelayed(const absl::Status& status) {
  for (auto& [number, relayed] : relayed_) {
    for (size_t c = 0; c < relayed.finished.size(); ++c) {
      if (relayed.finished[c]) continue;
      relayed.finished[c] = true;
      relayed.sink->OnFinal({.choice = static_cast<int>(c), .reason = FinishReason::kError, .error = status});
    }
  }
  relayed_.clear();
}

absl::Status GroupRelay::Deliver(int rank, const std::string& outputs, std::vector<AbortOrder>& finished) {
  WireReader r(outputs);
  while (!r.empty()) {
    ASSIGN_OR_RETURN(const uint8_t kind, r.Get<uint8_t>());
    ASSIGN_OR_RETURN(const uint64_t number, r.Get<uint64_t>());
    auto it = relayed_.find(number);
    if (it == relayed_.end()) {
      return absl::DataLossError(absl::StrCat("rank ", rank, " sent outputs for unknown submission ", number));
    }
    Relayed& relayed = it->second;
    if (kind == static_cast<uint8_t>(Record::kDelta)) {
      ASSIGN_OR_RETURN(const OutputDelta delta, GetDelta(r));
      relayed.sink->OnDelta(delta);
      continue;
    }
    if (kind != static_cast<uint8_t>(Record::kFinal)) {
      return absl::DataLossError(absl::StrCat("rank ", rank, " sent an output record of unknown kind"));
    }
    ASSIGN_OR_RETURN(const FinalOutput final, GetFinal(r));
    if (final.choice < 0 || final.choice >= static_cast<int>(relayed.finished.size()) ||
        relayed.finished[final.choice]) {
      return absl::DataLossError(absl::StrCat("rank ", rank, " sent a second or unknown final"));
    }
    relayed.finished[final.choice] = true;
    relayed.sink->OnFinal(final);
    if (--relayed.unfinished == 0) {
      finished.push_back({relayed.request_id, number});
      relayed_.erase(it);
      placed_on_.erase(number);
    }
  }
  return absl::OkStatus();
}

}  // namespace moe
