// Test helpers for the engine: a sink that records everything, and a text stream that
// spells token t as a fixed piece of text.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "runtime/engine/output.h"
#include "runtime/engine/text_stream.h"

namespace moe::testing {

class RecordingSink : public OutputSink {
 public:
  struct Choice {
    std::vector<int32_t> tokens;
    std::string text;
    std::vector<std::string> text_deltas;
    std::vector<SampledLogprobs> logprobs;
    std::optional<FinalOutput> final;
    int finals = 0;
  };

  void OnDelta(const OutputDelta& d) override {
    absl::MutexLock lock(&mu_);
    Choice& c = choices_[d.choice];
    EXPECT_FALSE(c.final.has_value()) << "delta after the final record";
    c.tokens.insert(c.tokens.end(), d.token_ids.begin(), d.token_ids.end());
    c.text += d.text;
    if (!d.text.empty()) c.text_deltas.push_back(d.text);
    c.logprobs.insert(c.logprobs.end(), d.logprobs.begin(), d.logprobs.end());
    if (on_delta) on_delta(d);
  }
  void OnFinal(const FinalOutput& f) override {
    absl::MutexLock lock(&mu_);
    Choice& c = choices_[f.choice];
    c.final = f;
    ++c.finals;
    ++num_finals_;
  }

  Choice choice(int i = 0) const {
    absl::MutexLock lock(&mu_);
    auto it = choices_.find(i);
    return it == choices_.end() ? Choice{} : it->second;
  }
  int num_finals() const {
    absl::MutexLock lock(&mu_);
    return num_finals_;
  }
  void WaitForFinals(int n) const {
    absl::MutexLock lock(&mu_);
    auto done = [&]() { return num_finals_ >= n; };
    mu_.Await(absl::Condition(&done));
  }

  std::function<void(const OutputDelta&)> on_delta;  // called on the engine thread

 private:
  mutable absl::Mutex mu_;
  std::map<int, Choice> choices_;
  int num_finals_ = 0;
};

// Token t reads as pieces[t % pieces.size()].
class PieceTextStream : public TextStream {
 public:
  explicit PieceTextStream(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  std::string Append(int32_t token) override { return pieces_[token % pieces_.size()]; }

 private:
  std::vector<std::string> pieces_;
};

}  // namespace moe::testing
