// Recursive-descent parser for the chat-template subset of Jinja2 (see parser.h).
#include "runtime/text/jinja/parser.h"

#include <charconv>
#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/text/jinja/lexer.h"

namespace moe::text::jinja {
namespace {

using ExprPtr = std::unique_ptr<Expr>;

// Nesting limits keep hostile templates from overflowing the stack (parser and interpreter
// both recurse along the tree).
constexpr int kMaxExpressionDepth = 100;
constexpr int kMaxBlockDepth = 100;

// Counts one level of recursion for as long as it lives.
class DepthGuard {
 public:
  explicit DepthGuard(int* depth) : depth_(depth) { ++*depth_; }
  ~DepthGuard() { --*depth_; }

 private:
  int* depth_;
};

ExprPtr MakeExpr(Expr::Kind kind, std::string name = "") {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->name = std::move(name);
  return e;
}

ExprPtr MakeBinary(std::string op, ExprPtr a, ExprPtr b) {
  ExprPtr e = MakeExpr(Expr::Kind::kBinary, std::move(op));
  e->args.push_back(std::move(a));
  e->args.push_back(std::move(b));
  return e;
}

// Parses the tokens of one tag. Precedence follows Jinja2: cond < or < and < not < compare
// < + - < ~ < * / // % < ** < unary < filters / tests < postfix.
class ExprParser {
 public:
  ExprParser(const std::vector<Token>& tokens, int line) : t_(tokens), line_(line) {}

  bool AtEnd() const { return i_ >= t_.size(); }
  bool PeekName(const char* name) const {
    return !AtEnd() && t_[i_].type == Token::Type::kName && t_[i_].text == name;
  }
  bool PeekOp(const char* op) const {
    return !AtEnd() && t_[i_].type == Token::Type::kOp && t_[i_].text == op;
  }
  bool TakeName(const char* name) { return PeekName(name) ? (++i_, true) : false; }
  bool TakeOp(const char* op) { return PeekOp(op) ? (++i_, true) : false; }

  absl::Status Error(const std::string& what) const {
    const std::string at = AtEnd() ? "end of tag" : absl::StrCat("'", t_[i_].text, "'");
    return absl::InvalidArgumentError(
        absl::StrCat("chat template line ", line_, ": ", what, " (at ", at, ")"));
  }
  absl::Status ExpectOp(const char* op) {
    return TakeOp(op) ? absl::OkStatus() : Error(absl::StrCat("expected '", op, "'"));
  }
  absl::StatusOr<std::string> ExpectName() {
    if (AtEnd() || t_[i_].type != Token::Type::kName) return Error("expected a name");
    return t_[i_++].text;
  }
  absl::Status ExpectEnd() { return AtEnd() ? absl::OkStatus() : Error("unexpected token"); }

  absl::StatusOr<ExprPtr> Expression() {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxExpressionDepth) return Error("expression nested too deeply");
    ASSIGN_OR_RETURN(ExprPtr value, Or());
    if (!TakeName("if")) return value;
    ExprPtr e = MakeExpr(Expr::Kind::kCond);
    e->args.push_back(std::move(value));
    ASSIGN_OR_RETURN(ExprPtr cond, Or());
    e->args.push_back(std::move(cond));
    ExprPtr other;
    if (TakeName("else")) {
      ASSIGN_OR_RETURN(other, Expression());
    }
    e->args.push_back(std::move(other));
    return e;
  }

  // An expression without the inline if (for-loop filters stop before their `if`).
  absl::StatusOr<ExprPtr> Or() {
    ASSIGN_OR_RETURN(ExprPtr e, And());
    while (TakeName("or")) {
      ASSIGN_OR_RETURN(ExprPtr rhs, And());
      e = MakeBinary("or", std::move(e), std::move(rhs));
    }
    return e;
  }

 private:
  absl::StatusOr<ExprPtr> And() {
    ASSIGN_OR_RETURN(ExprPtr e, Not());
    while (TakeName("and")) {
      ASSIGN_OR_RETURN(ExprPtr rhs, Not());
      e = MakeBinary("and", std::move(e), std::move(rhs));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> Not() {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxExpressionDepth) return Error("expression nested too deeply");
    if (!TakeName("not")) return Compare();
    ExprPtr e = MakeExpr(Expr::Kind::kUnary, "not");
    ASSIGN_OR_RETURN(ExprPtr operand, Not());
    e->args.push_back(std::move(operand));
    return e;
  }

  absl::StatusOr<ExprPtr> Compare() {
    ASSIGN_OR_RETURN(ExprPtr e, Additive());
    while (true) {
      std::string op;
      for (const char* c : {"==", "!=", "<", "<=", ">", ">="}) {
        if (PeekOp(c)) op = c;
      }
      if (!op.empty()) {
        ++i_;
      } else if (TakeName("in")) {
        op = "in";
      } else if (PeekName("not") && i_ + 1 < t_.size() && t_[i_ + 1].text == "in") {
        i_ += 2;
        op = "not in";
      } else {
        return e;
      }
      ASSIGN_OR_RETURN(ExprPtr rhs, Additive());
      e = MakeBinary(op, std::move(e), std::move(rhs));
    }
  }

  // One level of left-associative binary operators.
  template <typename Next>
  absl::StatusOr<ExprPtr> Binary(std::initializer_list<const char*> ops, Next next) {
    ASSIGN_OR_RETURN(ExprPtr e, (this->*next)());
    while (true) {
      const char* found = nullptr;
      for (const char* op : ops) {
        if (PeekOp(op)) found = op;
      }
      if (found == nullptr) return e;
      ++i_;
      ASSIGN_OR_RETURN(ExprPtr rhs, (this->*next)());
      e = MakeBinary(found, std::move(e), std::move(rhs));
    }
  }
  absl::StatusOr<ExprPtr> Additive() { return Binary({"+", "-"}, &ExprParser::Concat); }
  absl::StatusOr<ExprPtr> Concat() { return Binary({"~"}, &ExprParser::Multiplicative); }
  absl::StatusOr<ExprPtr> Multiplicative() {
    return Binary({"*", "/", "//", "%"}, &ExprParser::Power);
  }
  absl::StatusOr<ExprPtr> Power() { return Binary({"**"}, &ExprParser::Unary); }

  absl::StatusOr<ExprPtr> Unary() {
    DepthGuard guard(&depth_);
    if (depth_ > kMaxExpressionDepth) return Error("expression nested too deeply");
    for (const char* op : {"-", "+"}) {
      if (TakeOp(op)) {
        ExprPtr e = MakeExpr(Expr::Kind::kUnary, op);
        ASSIGN_OR_RETURN(ExprPtr operand, Unary());
        e->args.push_back(std::move(operand));
        return e;
      }
    }
    ASSIGN_OR_RETURN(ExprPtr e, Primary());
    ASSIGN_OR_RETURN(e, Postfix(std::move(e)));
    return FiltersAndTests(std::move(e));
  }

  // After '(' up to and including ')'; appends to call->args (after the callee or filter
  // input already there) and call->kwargs.
  absl::Status Arguments(Expr* call) {
    for (bool first = true; !TakeOp(")"); first = false) {
      if (!first) RETURN_IF_ERROR(ExpectOp(","));
      if (TakeOp(")")) break;  // trailing comma
      if (i_ + 1 < t_.size() && t_[i_].type == Token::Type::kName && t_[i_ + 1].text == "=") {
        std::string key = t_[i_].text;
        i_ += 2;
        ASSIGN_OR_RETURN(ExprPtr value, Expression());
        call->kwargs.emplace_back(std::move(key), std::move(value));
      } else {
        ASSIGN_OR_RETURN(ExprPtr value, Expression());
        call->args.push_back(std::move(value));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> Subscript(ExprPtr object) {  // after '['
    ExprPtr bounds[3];
    int colons = 0;
    while (!TakeOp("]")) {
      if (TakeOp(":")) {
        if (++colons > 2) return Error("too many ':' in slice");
        continue;
      }
      if (bounds[colons]) return Error("expected ':' or ']'");
      ASSIGN_OR_RETURN(bounds[colons], Expression());
    }
    ExprPtr e = MakeExpr(colons == 0 ? Expr::Kind::kIndex : Expr::Kind::kSlice);
    e->args.push_back(std::move(object));
    if (colons == 0 && !bounds[0]) return Error("empty subscript");
    for (int k = 0; k < (colons == 0 ? 1 : 3); ++k) e->args.push_back(std::move(bounds[k]));
    return e;
  }

  absl::StatusOr<ExprPtr> Postfix(ExprPtr e) {
    while (true) {
      if (TakeOp(".")) {
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        ExprPtr attr = MakeExpr(Expr::Kind::kAttr, name);
        attr->args.push_back(std::move(e));
        e = std::move(attr);
      } else if (TakeOp("[")) {
        ASSIGN_OR_RETURN(e, Subscript(std::move(e)));
      } else if (TakeOp("(")) {
        ExprPtr call = MakeExpr(Expr::Kind::kCall);
        call->args.push_back(std::move(e));
        RETURN_IF_ERROR(Arguments(call.get()));
        e = std::move(call);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> FiltersAndTests(ExprPtr e) {
    while (true) {
      if (TakeOp("|")) {
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        ExprPtr filter = MakeExpr(Expr::Kind::kFilter, name);
        filter->args.push_back(std::move(e));
        if (TakeOp("(")) RETURN_IF_ERROR(Arguments(filter.get()));
        e = std::move(filter);
      } else if (TakeName("is")) {
        const bool negated = TakeName("not");
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        ExprPtr test = MakeExpr(Expr::Kind::kTest, name);
        test->negated = negated;
        test->args.push_back(std::move(e));
        if (TakeOp("(")) RETURN_IF_ERROR(Arguments(test.get()));
        e = std::move(test);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> Primary();
  absl::StatusOr<ExprPtr> Display(const std::string& open);

  const std::vector<Token>& t_;
  size_t i_ = 0;
  int line_;
  int depth_ = 0;
};

absl::StatusOr<ExprPtr> ExprParser::Primary() {
  if (AtEnd()) return Error("expected an expression");
  const Token& tok = t_[i_++];
  ExprPtr e = MakeExpr(Expr::Kind::kLiteral);
  switch (tok.type) {
    case Token::Type::kString:
      e->literal = Value(tok.text);
      while (!AtEnd() && t_[i_].type == Token::Type::kString) {  // adjacent literals join
        e->literal = Value(e->literal.AsString() + t_[i_++].text);
      }
      return e;
    case Token::Type::kInt: {
      int64_t value = 0;
      auto [end, ec] = std::from_chars(tok.text.data(), tok.text.data() + tok.text.size(), value);
      if (ec != std::errc() || end != tok.text.data() + tok.text.size()) {
        return (--i_, Error("integer literal out of range"));
      }
      e->literal = Value(value);
      return e;
    }
    case Token::Type::kFloat:
      e->literal = Value(std::strtod(tok.text.c_str(), nullptr));
      return e;
    case Token::Type::kName:
      if (tok.text == "true" || tok.text == "True")
        e->literal = Value(true);
      else if (tok.text == "false" || tok.text == "False")
        e->literal = Value(false);
      else if (tok.text == "none" || tok.text == "None")
        e->literal = Value::None();
      else
        return MakeExpr(Expr::Kind::kName, tok.text);
      return e;
    case Token::Type::kOp:
      break;
  }
  if (tok.text != "[" && tok.text != "{" && tok.text != "(") {
    return (--i_, Error("expected an expression"));
  }
  return Display(tok.text);
}

// A list, dict, tuple or parenthesized expression, after its opening bracket.
absl::StatusOr<ExprPtr> ExprParser::Display(const std::string& open) {
  const bool dict = open == "{", paren = open == "(";
  const char* close = open == "[" ? "]" : dict ? "}" : ")";
  ExprPtr items = MakeExpr(dict ? Expr::Kind::kDict : Expr::Kind::kList);
  bool tuple = !paren;
  while (!TakeOp(close)) {
    if (!items->args.empty()) {
      RETURN_IF_ERROR(ExpectOp(","));
      tuple = true;
      if (TakeOp(close)) break;
    }
    ASSIGN_OR_RETURN(ExprPtr item, Expression());
    items->args.push_back(std::move(item));
    if (dict) {
      RETURN_IF_ERROR(ExpectOp(":"));
      ASSIGN_OR_RETURN(ExprPtr value, Expression());
      items->args.push_back(std::move(value));
    }
  }
  if (paren && !tuple && items->args.size() == 1) return std::move(items->args[0]);
  return items;
}

// Parses the chunk sequence into statements.
class TemplateParser {
 public:
  explicit TemplateParser(std::vector<Chunk> chunks) : chunks_(std::move(chunks)) {}

  // Parses until a statement whose keyword is in `stops` (returned, tag not consumed beyond
  // its keyword) or the end (returns "").
  absl::StatusOr<std::string> ParseBody(const std::set<std::string>& stops, Body* body);

 private:
  absl::Status ParseStatement(const Chunk& chunk, const std::string& keyword, ExprParser& p,
                              Body* body);
  absl::Status ParseIf(ExprParser& p, Node* node);
  absl::Status ParseFor(ExprParser& p, Node* node);
  absl::Status ParseSet(ExprParser& p, Node* node);

  ExprParser* stop_parser() { return stop_parser_.get(); }

  std::vector<Chunk> chunks_;
  size_t next_ = 0;
  int depth_ = 0;
  std::unique_ptr<ExprParser> stop_parser_;  // the stop tag's parser, after its keyword
};

absl::StatusOr<std::string> TemplateParser::ParseBody(const std::set<std::string>& stops,
                                                      Body* body) {
  DepthGuard guard(&depth_);
  if (depth_ > kMaxBlockDepth) {
    return absl::InvalidArgumentError("chat template: blocks nested too deeply");
  }
  while (next_ < chunks_.size()) {
    const Chunk& chunk = chunks_[next_++];
    auto node = std::make_unique<Node>();
    node->line = chunk.line;
    if (chunk.type == Chunk::Type::kText) {
      node->text = chunk.text;
      body->push_back(std::move(node));
      continue;
    }
    auto p = std::make_unique<ExprParser>(chunk.tokens, chunk.line);
    if (chunk.type == Chunk::Type::kExpression) {
      node->kind = Node::Kind::kOutput;
      ASSIGN_OR_RETURN(node->expr, p->Expression());
      RETURN_IF_ERROR(p->ExpectEnd());
      body->push_back(std::move(node));
      continue;
    }
    ASSIGN_OR_RETURN(std::string keyword, p->ExpectName());
    if (stops.count(keyword)) {
      stop_parser_ = std::move(p);
      return keyword;
    }
    RETURN_IF_ERROR(ParseStatement(chunk, keyword, *p, body));
  }
  if (!stops.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template ended inside a block (expected {% ", *stops.rbegin(), " %})"));
  }
  return std::string();
}

absl::Status TemplateParser::ParseStatement(const Chunk& chunk, const std::string& keyword,
                                            ExprParser& p, Body* body) {
  auto node = std::make_unique<Node>();
  node->line = chunk.line;
  if (keyword == "if") {
    RETURN_IF_ERROR(ParseIf(p, node.get()));
  } else if (keyword == "for") {
    RETURN_IF_ERROR(ParseFor(p, node.get()));
  } else if (keyword == "set") {
    RETURN_IF_ERROR(ParseSet(p, node.get()));
  } else if (keyword == "break" || keyword == "continue") {
    node->kind = keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
    RETURN_IF_ERROR(p.ExpectEnd());
  } else if (keyword == "generation") {  // transformers' assistant-mask marker: just the body
    RETURN_IF_ERROR(p.ExpectEnd());
    ASSIGN_OR_RETURN(std::string stop, ParseBody({"endgeneration"}, body));
    return stop_parser()->ExpectEnd();
  } else {
    return absl::UnimplementedError(absl::StrCat("chat template line ", chunk.line, ": '{% ",
                                                 keyword, " %}' is not supported"));
  }
  body->push_back(std::move(node));
  return absl::OkStatus();
}

absl::Status TemplateParser::ParseIf(ExprParser& first, Node* node) {
  node->kind = Node::Kind::kIf;
  std::unique_ptr<ExprParser> owned;  // the parser of the latest elif / else / endif tag
  ExprParser* cond_parser = &first;
  while (true) {
    ASSIGN_OR_RETURN(ExprPtr cond, cond_parser->Expression());
    RETURN_IF_ERROR(cond_parser->ExpectEnd());
    Body branch;
    ASSIGN_OR_RETURN(std::string stop, ParseBody({"elif", "else", "endif"}, &branch));
    node->branches.emplace_back(std::move(cond), std::move(branch));
    owned = std::move(stop_parser_);
    if (stop == "elif") {
      cond_parser = owned.get();
      continue;
    }
    if (stop == "else") {
      RETURN_IF_ERROR(owned->ExpectEnd());
      Body else_body;
      ASSIGN_OR_RETURN(stop, ParseBody({"endif"}, &else_body));
      node->branches.emplace_back(nullptr, std::move(else_body));
      owned = std::move(stop_parser_);
    }
    return owned->ExpectEnd();
  }
}

absl::Status TemplateParser::ParseFor(ExprParser& p, Node* node) {
  node->kind = Node::Kind::kFor;
  do {
    ASSIGN_OR_RETURN(std::string target, p.ExpectName());
    node->targets.push_back(std::move(target));
  } while (p.TakeOp(","));
  if (!p.TakeName("in")) return p.Error("expected 'in'");
  ASSIGN_OR_RETURN(node->expr, p.Or());
  if (p.TakeName("if")) {
    ASSIGN_OR_RETURN(node->filter, p.Or());
  }
  if (p.TakeName("recursive")) return p.Error("recursive loops are not supported");
  RETURN_IF_ERROR(p.ExpectEnd());
  ASSIGN_OR_RETURN(std::string stop, ParseBody({"else", "endfor"}, &node->body));
  if (stop == "else") {
    RETURN_IF_ERROR(stop_parser()->ExpectEnd());
    ASSIGN_OR_RETURN(stop, ParseBody({"endfor"}, &node->else_body));
  }
  return stop_parser()->ExpectEnd();
}

absl::Status TemplateParser::ParseSet(ExprParser& p, Node* node) {
  node->kind = Node::Kind::kSet;
  ASSIGN_OR_RETURN(node->target, p.ExpectName());
  if (p.TakeOp(".")) {
    ASSIGN_OR_RETURN(node->attr, p.ExpectName());
  }
  if (p.PeekOp(",")) return p.Error("tuple assignment in set is not supported");
  if (!p.TakeOp("=")) return p.Error("block set ({% set x %}...{% endset %}) is not supported");
  ASSIGN_OR_RETURN(node->expr, p.Expression());
  return p.ExpectEnd();
}

}  // namespace

absl::StatusOr<Body> Parse(const std::string& source) {
  ASSIGN_OR_RETURN(std::vector<Chunk> chunks, Lex(source));
  TemplateParser parser(std::move(chunks));
  Body body;
  ASSIGN_OR_RETURN(std::string stop, parser.ParseBody({}, &body));
  return body;
}

}  // namespace moe::text::jinja
