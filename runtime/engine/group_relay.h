// GroupRelay: how requests and outputs travel between rank 0, which runs the front ends,
// and the ranks whose engines run them (data-parallel attention under expert parallelism).
//
// Every rank's Engine calls it twice a step, in lockstep with the others:
//
//   control  = ExchangeControl(...)   rank 0 places its new requests (the rank with the most
//                                     free KV blocks, ties to the fewest sequences) and
//                                     broadcasts them with the aborts and the stop order
//   any work = AnyWork(...)           one all-reduce: does any rank run a forward?
//   ... the step: Forward on the ranks with tokens, ForwardIdle on the others ...
//   ExchangeOutputs(load)             each rank's outputs and load to rank 0, which hands
//                                     the outputs to the front ends' sinks
//
// A request placed on another rank runs there under a relay sink that records what it
// emits; rank 0 replays that into the request's own sink, so a front end cannot tell where
// its request ran.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/dist/communicator.h"
#include "runtime/engine/output.h"
#include "runtime/engine/request.h"

namespace moe {

// A request accepted by Engine::Submit, numbered by the engine that accepted it.
struct Submission {
  uint64_t number;
  std::shared_ptr<const Request> request;
  std::shared_ptr<OutputSink> sink;
  absl::Time submitted;  // timings and time limits count from here
};

struct AbortOrder {
  std::string request_id;
  uint64_t submission;  // the Submit() the abort was aimed at
};

// One rank's load, as of the end of its latest step.
struct RankLoad {
  int running = 0;
  int waiting = 0;
  int free_blocks = 0;
  int total_blocks = 0;
  int64_t steps = 0;               // since the start, idle ones included
  int64_t expert_rows_sent = 0;    // since the start (Model::expert_traffic)
  int64_t expert_rows_received = 0;
};

// Sequences (running + waiting) on the busiest rank over the mean per rank: 1 is balanced,
// R is everything on one rank of R; 1 with no sequences at all.
double LoadImbalance(const std::vector<RankLoad>& ranks);

class GroupRelay {
 public:
  GroupRelay(dist::Communicator& comm, int block_size);
  int rank() const { return comm_.Rank(); }

  struct Control {
    std::vector<Submission> admit;   // to admit on this rank (with relay sinks off rank 0)
    std::vector<AbortOrder> aborts;  // to apply on this rank
    bool stop = false;               // the group stops: finish everything as aborted
  };
  // Rank 0 passes what its front ends submitted and aborted since the last step, and
  // whether it is stopping; the other ranks pass nothing.
  absl::StatusOr<Control> ExchangeControl(std::vector<Submission> submissions,
                                          std::vector<AbortOrder> aborts, bool stopping);
  absl::StatusOr<bool> AnyWork(bool mine);
  // Rank 0 delivers every rank's outputs; returns the submissions placed elsewhere whose
  // last choice finished in this step.
  absl::StatusOr<std::vector<AbortOrder>> ExchangeOutputs(const RankLoad& mine);

  // Rank 0: each rank's load as of the last step.
  const std::vector<RankLoad>& loads() const { return loads_; }
  // Rank 0: requests running on other ranks.
  int num_relayed() const { return static_cast<int>(relayed_.size()); }
  // Rank 0: a final of kError with `status` for every choice still open on another rank.
  void FailRelayed(const absl::Status& status);

 private:
  class RelaySink;
  struct Relayed {
    std::string request_id;
    std::shared_ptr<OutputSink> sink;
    int unfinished = 0;
    std::vector<bool> finished;  // [n] by choice
  };
  int Place(const Request& request);
  absl::Status Deliver(int rank, const std::string& outputs, std::vector<AbortOrder>& finished);

  dist::Communicator& comm_;
  const int block_size_;
  std::vector<RankLoad> loads_;             // rank 0: [R], updated by placements between steps
  std::map<uint64_t, Relayed> relayed_;     // rank 0: submission -> where its outputs go
  std::map<uint64_t, int> placed_on_;       // rank 0: relayed submission -> its rank
  std::string outbox_;                      // other ranks: this step's outputs, encoded
};

}  // namespace moe
