// ApiKey: the server's one check of a caller's key, for HTTP's Authorization header and
// gRPC's `authorization` metadata alike: "Bearer <key>" (the scheme in any case), the key
// compared in time that depends only on the lengths, so it cannot be guessed byte by byte.
//
//   ApiKey key(options.api_key);                       // empty: every caller is let in
//   if (!key.Accepts(request.Header("authorization"))) ... 401 / UNAUTHENTICATED ...
#pragma once

#include <string>
#include <string_view>

namespace moe::server {

class ApiKey {
 public:
  explicit ApiKey(std::string key) : key_(std::move(key)) {}

  bool required() const { return !key_.empty(); }
  // Whether `authorization` carries the key; always true when none is required.
  bool Accepts(std::string_view authorization) const;

 private:
  std::string key_;
};

}  // namespace moe::server
