#include "runtime/check.h"

#include <cstdlib>
#include <iostream>

namespace moe::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  message_ << file << ":" << line << ": CHECK failed: " << condition << " ";
}

CheckFailure::~CheckFailure() {
  std::cerr << message_.str() << std::endl;
  std::abort();
}

}  // namespace moe::internal
