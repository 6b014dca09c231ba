#include "runtime/engine/stop_checker.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace moe {
namespace {

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// The largest cut <= pos that does not split a UTF-8 character.
size_t Utf8Boundary(const std::string& s, size_t pos) {
  while (pos > 0 && pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
  return pos;
}

}  // namespace

StopChecker::StopChecker(const StoppingParams& params, std::vector<int32_t> eos_ids,
                         std::unique_ptr<TextStream> text)
    : params_(params), eos_ids_(std::move(eos_ids)), text_(std::move(text)) {
  for (const std::string& s : params_.stop_strings) max_stop_len_ = std::max(max_stop_len_, s.size());
}

std::vector<int32_t> StopChecker::MaskedTokens(int num_output) const {
  if (num_output >= params_.min_tokens) return {};
  std::vector<int32_t> masked = params_.stop_token_ids;
  if (!params_.ignore_eos) masked.insert(masked.end(), eos_ids_.begin(), eos_ids_.end());
  return masked;
}

StopChecker::Step StopChecker::Append(int32_t token, int num_output) {
  Step step;
  const bool may_stop = num_output >= params_.min_tokens;
  const bool at_length = num_output >= params_.max_tokens;
  if (may_stop && !params_.ignore_eos && Contains(eos_ids_, token)) {
    step.finish = at_length ? FinishReason::kLength : FinishReason::kEos;
  } else if (may_stop && Contains(params_.stop_token_ids, token)) {
    step.finish = at_length ? FinishReason::kLength : FinishReason::kStopToken;
    if (!at_length) step.matched_stop = absl::StrCat(token);
  }
  if (step.finish.has_value()) {
    if (params_.include_stop_string && text_ != nullptr) pending_ += text_->Append(token);
    step.text = Flush();
    return step;
  }
  const size_t old_size = pending_.size();
  if (text_ != nullptr) pending_ += text_->Append(token);
  if (may_stop && FindStopString(old_size, step)) return step;
  if (at_length) {
    step.finish = FinishReason::kLength;
    step.text = Flush();
    return step;
  }
  step.text = Release(/*all=*/false);
  return step;
}

// The earliest stop string in the pending text that ends past `old_size`, in the newest
// token's text (held-back text always covers any occurrence that token could have
// completed). An occurrence that ended earlier was seen before min_tokens and is ignored
// for good.
bool StopChecker::FindStopString(size_t old_size, Step& step) {
  size_t best = std::string::npos;
  const std::string* matched = nullptr;
  for (const std::string& stop : params_.stop_strings) {
    const size_t from = old_size >= stop.size() ? old_size - stop.size() + 1 : 0;
    const size_t at = pending_.find(stop, from);
    if (at != std::string::npos && at < best) best = at, matched = &stop;
  }
  if (matched == nullptr) return false;
  step.finish = FinishReason::kStopString;
  step.matched_stop = *matched;
  step.text = pending_.substr(0, best + (params_.include_stop_string ? matched->size() : 0));
  pending_.clear();
  return true;
}

std::string StopChecker::Flush() {
  if (text_ != nullptr) pending_ += text_->Finish();
  return Release(/*all=*/true);
}

// Streams pending text except its last max_stop_len - 1 bytes (cut at a UTF-8 boundary),
// which could still begin a stop string.
std::string StopChecker::Release(bool all) {
  const size_t hold = all || max_stop_len_ == 0 ? 0 : max_stop_len_ - 1;
  if (pending_.size() <= hold) return "";
  const size_t cut = Utf8Boundary(pending_, pending_.size() - hold);
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

}  // namespace moe
