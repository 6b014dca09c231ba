// The syntax tree of a parsed chat template: expressions (Expr) and statements (Node).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/text/jinja/value.h"

namespace moe::text::jinja {

struct Expr {
  enum class Kind {
    kLiteral,  // literal
    kName,     // name
    kList,     // args: items (also tuples)
    kDict,     // args: key0, value0, key1, value1, ...
    kUnary,    // name: "not" "-" "+"; args[0]
    kBinary,   // name: operator ("or", "and", "==", "in", "not in", "+", "~", ...); args[0..1]
    kAttr,     // args[0].name
    kIndex,    // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]], each bound may be null
    kCall,     // args[0](args[1..], kwargs)
    kFilter,   // args[0] | name(args[1..], kwargs)
    kTest,     // args[0] is [not] name(args[1..])
    kCond,     // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind = Kind::kLiteral;
  Value literal;
  std::string name;
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negated = false;  // "is not"
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kBreak, kContinue };
  Kind kind = Kind::kText;
  int line = 0;
  std::string text;            // kText
  std::unique_ptr<Expr> expr;  // kOutput, kSet value, kFor iterable
  // kIf: (condition, body) in order; a null condition is the else branch.
  std::vector<std::pair<std::unique_ptr<Expr>, Body>> branches;
  // kFor
  std::vector<std::string> targets;  // loop variables ("key, value" unpacks)
  std::unique_ptr<Expr> filter;      // "for x in xs if cond"
  Body body;
  Body else_body;
  // kSet: target, or target.attr for a namespace member
  std::string target;
  std::string attr;
};

}  // namespace moe::text::jinja
