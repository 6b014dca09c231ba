// Field errors: an InvalidArgument status that carries the name of the request field it is
// about, as the front end spells it, so the HTTP API can report it as OpenAI's `param` and
// every front end words it the same way ("top_p must be in (0, 1], got 3").
//
//   return BadField("messages[0].role", "is empty");
//   FieldOf(status);  // "messages[0].role"
#pragma once

#include <string>

#include "absl/status/status.h"

namespace moe::server {

// InvalidArgument "<field> <what>", carrying `field`.
absl::Status BadField(const std::string& field, const std::string& what);
// `status` carrying `field` (an error whose message already names it).
absl::Status WithField(absl::Status status, const std::string& field);
// The field a status carries, or "" when none.
std::string FieldOf(const absl::Status& status);

}  // namespace moe::server
