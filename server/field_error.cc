// Field errors (see field_error.h).
#include "server/field_error.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace moe::server {
namespace {

constexpr char kFieldPayload[] = "moe.request.field";

}  // namespace

absl::Status BadField(const std::string& field, const std::string& what) {
  return WithField(absl::InvalidArgumentError(absl::StrCat(field, " ", what)), field);
}

absl::Status WithField(absl::Status status, const std::string& field) {
  if (!status.ok() && !field.empty()) status.SetPayload(kFieldPayload, absl::Cord(field));
  return status;
}

std::string FieldOf(const absl::Status& status) {
  const auto field = status.GetPayload(kFieldPayload);
  return field ? std::string(*field) : "";
}

}  // namespace moe::server
