// Wire: requests and their outputs as bytes, for the relay between rank 0 and the ranks
// that run them (expert parallelism with data-parallel attention).
//
// A plain little-endian encoding of our own structs, read back field for field: floats and
// durations travel as their exact bits, so a relayed request samples as a local one does.
// Reading checks every length against what is left, and a malformed message is an error.
//
//   WireWriter w;  PutRequest(w, request);  comm.Broadcast(w.bytes(), 0);
//   WireReader r(bytes);  ASSIGN_OR_RETURN(Request request, GetRequest(r));
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/engine/output.h"
#include "runtime/engine/request.h"

namespace moe {

class WireWriter {
 public:
  template <typename T>
    requires std::is_arithmetic_v<T>
  void Put(T value) {
    bytes_.append(reinterpret_cast<const char*>(&value), sizeof(T));
  }
  void Put(std::string_view s) {
    Put<uint64_t>(s.size());
    bytes_.append(s);
  }
  template <typename T>
    requires std::is_arithmetic_v<T>
  void Put(const std::vector<T>& values) {
    Put<uint64_t>(values.size());
    bytes_.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  }
  void Put(absl::Duration d);
  void Put(absl::Time t);
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : rest_(bytes) {}
  bool empty() const { return rest_.empty(); }

  template <typename T>
    requires std::is_arithmetic_v<T>
  absl::StatusOr<T> Get() {
    if (rest_.size() < sizeof(T)) return Truncated();
    T value;
    std::memcpy(&value, rest_.data(), sizeof(T));
    rest_.remove_prefix(sizeof(T));
    return value;
  }
  absl::StatusOr<std::string> GetString();
  template <typename T>
    requires std::is_arithmetic_v<T>
  absl::StatusOr<std::vector<T>> GetVector() {
    absl::StatusOr<uint64_t> n = Get<uint64_t>();
    if (!n.ok()) return n.status();
    if (*n > rest_.size() / sizeof(T)) return Truncated();
    std::vector<T> values(*n);
    if (*n > 0) std::memcpy(values.data(), rest_.data(), *n * sizeof(T));  // an empty vector's data() may be null
    rest_.remove_prefix(*n * sizeof(T));
    return values;
  }
  absl::StatusOr<absl::Duration> GetDuration();
  absl::StatusOr<absl::Time> GetTime();

 private:
  static absl::Status Truncated() { return absl::DataLossError("relay message is truncated"); }
  std::string_view rest_;
};

void PutRequest(WireWriter& w, const Request& request);
absl::StatusOr<Request> GetRequest(WireReader& r);
void PutDelta(WireWriter& w, const OutputDelta& delta);
absl::StatusOr<OutputDelta> GetDelta(WireReader& r);
void PutFinal(WireWriter& w, const FinalOutput& final);
absl::StatusOr<FinalOutput> GetFinal(WireReader& r);

}  // namespace moe
