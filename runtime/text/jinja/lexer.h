// jinja::Lex: cuts a template into text and tags, applying Jinja2's white-space rules as
// transformers configures them (trim_blocks=True, lstrip_blocks=True, `-` markers, newlines
// normalized to \n, one trailing newline dropped), and tokenizes each tag's expression.
//
//   ASSIGN_OR_RETURN(std::vector<Chunk> chunks, Lex("{% if x -%}\n  hi{% endif %}"));
//   // chunks: Block[if x] Text["hi"] Block[endif]
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace moe::text::jinja {

struct Token {
  enum class Type { kName, kString, kInt, kFloat, kOp };
  Type type;
  std::string text;  // the name, the unescaped string, the number's digits, or the operator
};

struct Chunk {
  enum class Type { kText, kExpression, kStatement };  // text, {{ ... }}, {% ... %}
  Type type;
  std::string text;           // kText only
  std::vector<Token> tokens;  // kExpression / kStatement
  int line = 1;               // where the chunk starts in the template, for error messages
};

absl::StatusOr<std::vector<Chunk>> Lex(const std::string& source);

}  // namespace moe::text::jinja
