// CHECK: aborts with file, line and a message when an internal invariant breaks.
//
// For programming errors only (shape mismatches between our own ops); anything a user can
// cause (bad files, bad requests) returns an absl::Status instead.
//
//   CHECK(x.rank() == 2) << "x is " << ShapeString(x.shape());
//   CHECK_EQ(w.dim(1), K);
#pragma once

#include <sstream>

namespace moe::internal {

class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  std::ostream& stream() { return message_; }

 private:
  std::ostringstream message_;
};

}  // namespace moe::internal

#define CHECK(condition) \
  if (condition) {       \
  } else                 \
    ::moe::internal::CheckFailure(__FILE__, __LINE__, #condition).stream()

#define CHECK_EQ(a, b) CHECK((a) == (b)) << #a " = " << (a) << ", " #b " = " << (b) << ": "
