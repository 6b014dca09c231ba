// ApiKey (see api_key.h).
#include "server/api_key.h"

#include <algorithm>

#include "absl/strings/match.h"

namespace moe::server {
namespace {

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? a[i] : 0;
    const unsigned char y = i < b.size() ? b[i] : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

}  // namespace

bool ApiKey::Accepts(std::string_view authorization) const {
  if (!required()) return true;
  constexpr std::string_view kBearer = "Bearer ";
  if (!absl::StartsWithIgnoreCase(absl::string_view(authorization.data(), authorization.size()), "Bearer ")) return false;
  return ConstantTimeEquals(authorization.substr(kBearer.size()), key_);
}

}  // namespace moe::server
