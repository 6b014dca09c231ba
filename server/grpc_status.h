// absl::Status -> grpc::Status: the same code and message (the two code sets agree).
//
//   reactor->Finish(ToGrpcStatus(engine.Submit(request, sink)));
#pragma once

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace moe::server {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// "INVALID_ARGUMENT", ... for metrics labels.
inline std::string CodeName(const absl::Status& status) {
  return absl::StatusCodeToString(status.code());
}

}  // namespace moe::server
