// The filters, tests and methods chat templates call, with Jinja2 / Python semantics.
//
// Filters: length count tojson string trim upper lower capitalize title default d join first
//          last list reverse replace int float abs items safe.
// Tests:   defined undefined none string number integer float boolean true false mapping
//          iterable sequence even odd eq equalto.
// Methods: str.strip lstrip rstrip startswith endswith split upper lower replace title
//          capitalize; dict.items keys values get.
// Anything else fails with a message naming it.
//
//   ASSIGN_OR_RETURN(Value n, ApplyFilter("length", messages, {}));
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/text/jinja/value.h"

namespace moe::text::jinja {

using Kwargs = std::vector<std::pair<std::string, Value>>;

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& input,
                                  const std::vector<Value>& args, const Kwargs& kwargs);
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& input,
                               const std::vector<Value>& args);
absl::StatusOr<Value> CallMethod(const Value& object, const std::string& name,
                                 const std::vector<Value>& args, const Kwargs& kwargs);

// Python str.strip / lstrip / rstrip: `chars` (or white space when undefined/none).
std::string StripString(const std::string& s, const Value& chars, bool left, bool right);

}  // namespace moe::text::jinja
