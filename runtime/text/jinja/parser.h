// jinja::Parse: template text -> syntax tree, for the subset of Jinja2 that chat templates use.
//
// Statements: if / elif / else, for (with tuple unpacking, an inline `if` filter and `else`),
// set (names and namespace attributes), break, continue, and transformers' `generation`
// block (rendered as its body). Expressions: literals (strings, numbers, booleans, none,
// lists, tuples, dicts), names, attributes, subscripts and slices, calls with keyword
// arguments, filters, tests (`is` / `is not`), `not and or`, comparisons, `in` / `not in`,
// `+ - * / // % ** ~` and inline `x if c else y`. Anything else (macros, blocks, includes,
// call blocks, filter blocks, raw) fails with a message naming the construct and line.
//
//   ASSIGN_OR_RETURN(Body tree, Parse("{% for m in messages %}{{ m.content }}{% endfor %}"));
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "runtime/text/jinja/ast.h"

namespace moe::text::jinja {

absl::StatusOr<Body> Parse(const std::string& source);

}  // namespace moe::text::jinja
