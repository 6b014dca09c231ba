// jinja::Render: runs a parsed template against global variables and returns its output.
//
// Semantics follow Jinja2 as transformers sets it up: undefined values print as nothing and
// are false, but arithmetic on them or calling their methods is an error; `for` loops get a
// `loop` object (index, index0, revindex, revindex0, first, last, length, previtem, nextitem)
// and their own scope; `namespace(...)` objects can be assigned across scopes;
// raise_exception(msg) stops rendering with InvalidArgument(msg); range() and strftime_now()
// are provided.
//
//   ASSIGN_OR_RETURN(Body tree, Parse(source));
//   ASSIGN_OR_RETURN(std::string out, Render(tree, {{"messages", messages}, {"bos_token",
//   "<s>"}}));
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "runtime/text/jinja/ast.h"
#include "runtime/text/jinja/value.h"

namespace moe::text::jinja {

absl::StatusOr<std::string> Render(const Body& tree, const Dict& globals);

// The message raise_exception() was called with is prefixed by this, so callers can tell a
// template's refusal from a template error.
inline constexpr char kRaisedPrefix[] = "chat template raised: ";

}  // namespace moe::text::jinja
