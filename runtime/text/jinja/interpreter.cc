// Template evaluation (see interpreter.h).
#include "runtime/text/jinja/interpreter.h"

#include <cmath>
#include <ctime>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/text/jinja/builtins.h"

namespace moe::text::jinja {
namespace {

enum class Flow { kNormal, kBreak, kContinue };

// Limits that keep a hostile template from running for ever or exhausting memory.
constexpr int64_t kMaxSteps = 10'000'000;            // statements executed
constexpr int64_t kMaxRangeLength = 1 << 20;         // range() items
constexpr size_t kMaxStringBytes = size_t{1} << 26;  // any built string, and the output

absl::Status OperandError(const std::string& op, const Value& a, const Value& b) {
  return absl::InvalidArgumentError(absl::StrCat("chat template: unsupported operand types for ",
                                                 op, ": ", a.TypeName(), " and ", b.TypeName()));
}

absl::Status TooLong() {
  return absl::ResourceExhaustedError("chat template: a string or list grew too long");
}

absl::StatusOr<Value> Arithmetic(const std::string& op, const Value& a, const Value& b) {
  if (op == "+" && a.IsString() && b.IsString()) {
    if (a.AsString().size() + b.AsString().size() > kMaxStringBytes) return TooLong();
    return Value(a.AsString() + b.AsString());
  }
  if (op == "+" && a.IsList() && b.IsList()) {
    if (a.AsList().size() + b.AsList().size() > kMaxRangeLength) return TooLong();
    List items = a.AsList();
    items.insert(items.end(), b.AsList().begin(), b.AsList().end());
    return Value::MakeList(std::move(items));
  }
  if (op == "*" && a.IsString() && b.kind() == Value::Kind::kInt) {
    if (b.AsInt() > 0 && static_cast<double>(a.AsString().size()) * static_cast<double>(b.AsInt()) >
                             static_cast<double>(kMaxStringBytes)) {
      return TooLong();
    }
    std::string out;
    for (int64_t i = 0; i < b.AsInt(); ++i) out += a.AsString();
    return Value(out);
  }
  const auto is_num = [](const Value& v) { return v.IsNumber() || v.kind() == Value::Kind::kBool; };
  if (!is_num(a) || !is_num(b)) return OperandError(op, a, b);
  const auto as_int = [](const Value& v) {
    return v.kind() == Value::Kind::kBool ? static_cast<int64_t>(v.AsBool()) : v.AsInt();
  };
  const bool ints = a.kind() != Value::Kind::kFloat && b.kind() != Value::Kind::kFloat;
  const double x = ints ? static_cast<double>(as_int(a)) : a.AsFloat();
  const double y = ints ? static_cast<double>(as_int(b)) : b.AsFloat();
  if ((op == "/" || op == "//" || op == "%") && y == 0) {
    return absl::InvalidArgumentError("chat template: division by zero");
  }
  if (op == "/") return Value(x / y);
  if (ints) {
    const int64_t i = as_int(a), j = as_int(b);
    if (op == "+") return Value(i + j);
    if (op == "-") return Value(i - j);
    if (op == "*") return Value(i * j);
    if (op == "//") return Value(static_cast<int64_t>(std::floor(x / y)));
    if (op == "%") return Value(((i % j) + j) % j);  // Python: sign of the divisor
    if (op == "**" && j >= 0) return Value(static_cast<int64_t>(std::llround(std::pow(x, y))));
  }
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (op == "//") return Value(std::floor(x / y));
  if (op == "%") return Value(x - y * std::floor(x / y));
  if (op == "**") return Value(std::pow(x, y));
  return OperandError(op, a, b);
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  if (container.IsString() && item.IsString()) {
    return container.AsString().find(item.AsString()) != std::string::npos;
  }
  if (container.IsList()) {
    for (const Value& v : container.AsList()) {
      if (v.Equals(item)) return true;
    }
    return false;
  }
  if (container.IsMapping())
    return item.IsString() && !container.Attr(item.AsString()).IsUndefined();
  return OperandError("in", item, container);
}

// Python slice of a list or string.
absl::StatusOr<Value> Slice(const Value& v, const Value& start, const Value& stop,
                            const Value& step_value) {
  List items;
  if (v.IsList()) {
    items = v.AsList();
  } else if (v.IsString()) {
    for (std::string& c : SplitChars(v.AsString())) items.emplace_back(std::move(c));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("chat template: cannot slice a ", v.TypeName()));
  }
  const int64_t n = static_cast<int64_t>(items.size());
  const int64_t step = step_value.IsNumber() ? step_value.AsInt() : 1;
  if (step == 0) return absl::InvalidArgumentError("chat template: slice step cannot be zero");
  auto clamp = [&](const Value& bound, int64_t fallback) {
    if (!bound.IsNumber()) return fallback;
    int64_t i = bound.AsInt();
    if (i < 0) i += n;
    return step > 0 ? std::clamp<int64_t>(i, 0, n) : std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t begin = clamp(start, step > 0 ? 0 : n - 1);
  const int64_t end = clamp(stop, step > 0 ? n : -1);
  List out;
  for (int64_t i = begin; step > 0 ? i < end : i > end; i += step) out.push_back(items[i]);
  if (!v.IsString()) return Value::MakeList(std::move(out));
  std::string s;
  for (const Value& c : out) s += c.AsString();
  return Value(s);
}

class Interpreter {
 public:
  explicit Interpreter(const Dict& globals) {
    scopes_.emplace_back();
    for (const auto& [name, value] : globals) scopes_.back()[name] = value;
  }

  absl::StatusOr<Flow> Exec(const Body& body);
  std::string TakeOutput() { return std::move(out_); }

 private:
  absl::StatusOr<Value> Eval(const Expr& e);
  absl::StatusOr<Value> EvalBinary(const Expr& e);
  absl::StatusOr<Value> EvalCollection(const Expr& e);  // list and dict displays
  absl::StatusOr<Value> EvalAccess(const Expr& e);      // .attr, [key], [a:b:c]
  absl::StatusOr<Value> EvalFilterOrTest(const Expr& e);
  absl::StatusOr<Value> EvalCall(const Expr& e);
  absl::StatusOr<Flow> ExecFor(const Node& node);
  absl::Status BindLoopTargets(const Node& node, const Value& item);
  absl::Status ExecSet(const Node& node);
  absl::Status EvalArgs(const Expr& e, size_t first, std::vector<Value>* args, Kwargs* kwargs);

  Value Lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value();
  }

  std::vector<absl::flat_hash_map<std::string, Value>> scopes_;
  std::string out_;
  int64_t steps_ = 0;
};

absl::StatusOr<Flow> Interpreter::Exec(const Body& body) {
  for (const auto& node : body) {
    if (++steps_ > kMaxSteps || out_.size() > kMaxStringBytes) {
      return absl::ResourceExhaustedError(
          "chat template: rendering took too many steps or made too much output");
    }
    switch (node->kind) {
      case Node::Kind::kText:
        out_ += node->text;
        break;
      case Node::Kind::kOutput: {
        ASSIGN_OR_RETURN(Value v, Eval(*node->expr));
        out_ += v.Str();
        break;
      }
      case Node::Kind::kIf:
        for (const auto& [cond, branch] : node->branches) {
          bool taken = cond == nullptr;
          if (!taken) {
            ASSIGN_OR_RETURN(Value c, Eval(*cond));
            taken = c.Truthy();
          }
          if (!taken) continue;
          ASSIGN_OR_RETURN(Flow flow, Exec(branch));
          if (flow != Flow::kNormal) return flow;
          break;
        }
        break;
      case Node::Kind::kFor: {
        ASSIGN_OR_RETURN(Flow flow, ExecFor(*node));
        (void)flow;
        break;
      }
      case Node::Kind::kSet:
        RETURN_IF_ERROR(ExecSet(*node));
        break;
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
    }
  }
  return Flow::kNormal;
}

absl::Status Interpreter::ExecSet(const Node& node) {
  ASSIGN_OR_RETURN(Value v, Eval(*node.expr));
  if (node.attr.empty()) {
    scopes_.back()[node.target] = std::move(v);
    return absl::OkStatus();
  }
  Value ns = Lookup(node.target);
  if (ns.kind() != Value::Kind::kNamespace) {
    return absl::InvalidArgumentError(absl::StrCat(
        "chat template line ", node.line, ": cannot set attribute of '", node.target,
        "', which is a ", ns.TypeName(), " (only namespace() objects take attributes)"));
  }
  for (auto& [key, value] : ns.MutableDict()) {
    if (key == node.attr) {
      value = std::move(v);
      return absl::OkStatus();
    }
  }
  ns.MutableDict().emplace_back(node.attr, std::move(v));
  return absl::OkStatus();
}

// The items a for loop visits: list items, dict keys or characters; none for undefined.
absl::StatusOr<List> LoopItems(const Value& iterable, int line) {
  List items;
  if (iterable.IsList()) {
    items = iterable.AsList();
  } else if (iterable.IsMapping()) {
    for (const auto& [key, value] : iterable.AsDict()) items.emplace_back(key);
  } else if (iterable.IsString()) {
    for (std::string& c : SplitChars(iterable.AsString())) items.emplace_back(std::move(c));
  } else if (!iterable.IsUndefined() && !iterable.IsNone()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template line ", line, ": cannot loop over a ", iterable.TypeName()));
  }
  return items;
}

Value LoopObject(const List& items, int64_t i) {
  const auto n = static_cast<int64_t>(items.size());
  return Value::MakeDict({{"index", Value(i + 1)},
                          {"index0", Value(i)},
                          {"revindex", Value(n - i)},
                          {"revindex0", Value(n - i - 1)},
                          {"first", Value(i == 0)},
                          {"last", Value(i == n - 1)},
                          {"length", Value(n)},
                          {"previtem", i > 0 ? items[i - 1] : Value()},
                          {"nextitem", i + 1 < n ? items[i + 1] : Value()}});
}

absl::Status Interpreter::BindLoopTargets(const Node& node, const Value& item) {
  if (node.targets.size() == 1) {
    scopes_.back()[node.targets[0]] = item;
    return absl::OkStatus();
  }
  if (!item.IsList() || item.AsList().size() != node.targets.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template line ", node.line, ": cannot unpack loop item"));
  }
  for (size_t k = 0; k < node.targets.size(); ++k) {
    scopes_.back()[node.targets[k]] = item.AsList()[k];
  }
  return absl::OkStatus();
}

absl::StatusOr<Flow> Interpreter::ExecFor(const Node& node) {
  ASSIGN_OR_RETURN(Value iterable, Eval(*node.expr));
  ASSIGN_OR_RETURN(List items, LoopItems(iterable, node.line));
  if (node.filter) {  // "for x in xs if cond": loop.* count the kept items only
    List kept;
    for (const Value& item : items) {
      scopes_.emplace_back();
      absl::Status bound = BindLoopTargets(node, item);
      absl::StatusOr<Value> keep = bound.ok() ? Eval(*node.filter) : bound;
      scopes_.pop_back();
      if (!keep.ok()) return keep.status();
      if (keep->Truthy()) kept.push_back(item);
    }
    items = std::move(kept);
  }
  for (size_t i = 0; i < items.size(); ++i) {
    scopes_.emplace_back();
    scopes_.back()["loop"] = LoopObject(items, static_cast<int64_t>(i));
    absl::Status bound = BindLoopTargets(node, items[i]);
    absl::StatusOr<Flow> flow = bound.ok() ? Exec(node.body) : bound;
    scopes_.pop_back();
    if (!flow.ok()) return flow.status();
    if (*flow == Flow::kBreak) break;
  }
  if (items.empty() && !node.else_body.empty()) return Exec(node.else_body);
  return Flow::kNormal;
}

absl::Status Interpreter::EvalArgs(const Expr& e, size_t first, std::vector<Value>* args,
                                   Kwargs* kwargs) {
  for (size_t i = first; i < e.args.size(); ++i) {
    ASSIGN_OR_RETURN(Value v, Eval(*e.args[i]));
    args->push_back(std::move(v));
  }
  for (const auto& [key, expr] : e.kwargs) {
    ASSIGN_OR_RETURN(Value v, Eval(*expr));
    kwargs->emplace_back(key, std::move(v));
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Interpreter::EvalCall(const Expr& e) {
  std::vector<Value> args;
  Kwargs kwargs;
  RETURN_IF_ERROR(EvalArgs(e, 1, &args, &kwargs));
  const Expr& callee = *e.args[0];
  if (callee.kind == Expr::Kind::kAttr) {
    ASSIGN_OR_RETURN(Value object, Eval(*callee.args[0]));
    return CallMethod(object, callee.name, args, kwargs);
  }
  const std::string name = callee.kind == Expr::Kind::kName ? callee.name : "";
  if (name == "raise_exception") {
    return absl::InvalidArgumentError(
        absl::StrCat(kRaisedPrefix, args.empty() ? std::string() : args[0].Str()));
  }
  if (name == "namespace") {
    Dict members(kwargs.begin(), kwargs.end());
    return Value::MakeNamespace(std::move(members));
  }
  if (name == "range") {
    int64_t lo = 0, hi = 0, step = 1;
    if (args.size() == 1) hi = args[0].AsInt();
    if (args.size() >= 2) lo = args[0].AsInt(), hi = args[1].AsInt();
    if (args.size() == 3) step = args[2].AsInt();
    if (args.empty() || args.size() > 3 || step == 0) {
      return absl::InvalidArgumentError("chat template: range() takes 1 to 3 non-zero arguments");
    }
    if ((static_cast<double>(hi) - static_cast<double>(lo)) / static_cast<double>(step) >
        static_cast<double>(kMaxRangeLength)) {
      return absl::ResourceExhaustedError("chat template: range() is too long");
    }
    List out;
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) out.emplace_back(i);
    return Value::MakeList(std::move(out));
  }
  if (name == "strftime_now") {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buffer[256];
    const std::string format = args.empty() ? "" : args[0].Str();
    return Value(std::string(buffer, std::strftime(buffer, sizeof(buffer), format.c_str(), &tm)));
  }
  return absl::UnimplementedError(
      absl::StrCat("chat template: function '", name, "' is not supported"));
}

absl::StatusOr<Value> Interpreter::EvalBinary(const Expr& e) {
  ASSIGN_OR_RETURN(Value a, Eval(*e.args[0]));
  const std::string& op = e.name;
  if (op == "and") return a.Truthy() ? Eval(*e.args[1]) : a;
  if (op == "or") return a.Truthy() ? a : Eval(*e.args[1]);
  ASSIGN_OR_RETURN(Value b, Eval(*e.args[1]));
  if (op == "==") return Value(a.Equals(b));
  if (op == "!=") return Value(!a.Equals(b));
  if (op == "<" || op == "<=" || op == ">" || op == ">=") {
    const bool comparable = (a.IsNumber() && b.IsNumber()) || (a.IsString() && b.IsString());
    if (!comparable) return OperandError(op, a, b);
    if (op == "<") return Value(a.Less(b));
    if (op == "<=") return Value(!b.Less(a));
    if (op == ">") return Value(b.Less(a));
    return Value(!a.Less(b));
  }
  if (op == "in" || op == "not in") {
    ASSIGN_OR_RETURN(bool found, Contains(b, a));
    return Value(op == "in" ? found : !found);
  }
  if (op == "~") {
    std::string joined = a.Str() + b.Str();
    if (joined.size() > kMaxStringBytes) return TooLong();
    return Value(std::move(joined));
  }
  return Arithmetic(op, a, b);
}

absl::StatusOr<Value> Interpreter::EvalCollection(const Expr& e) {
  if (e.kind == Expr::Kind::kList) {
    List items;
    for (const auto& item : e.args) {
      ASSIGN_OR_RETURN(Value v, Eval(*item));
      items.push_back(std::move(v));
    }
    return Value::MakeList(std::move(items));
  }
  Dict items;
  for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
    ASSIGN_OR_RETURN(Value key, Eval(*e.args[i]));
    ASSIGN_OR_RETURN(Value value, Eval(*e.args[i + 1]));
    items.emplace_back(key.Str(), std::move(value));
  }
  return Value::MakeDict(std::move(items));
}

absl::StatusOr<Value> Interpreter::EvalAccess(const Expr& e) {
  ASSIGN_OR_RETURN(Value object, Eval(*e.args[0]));
  if (e.kind == Expr::Kind::kSlice) {
    Value bounds[3];
    for (int k = 0; k < 3; ++k) {
      if (e.args[k + 1]) {
        ASSIGN_OR_RETURN(bounds[k], Eval(*e.args[k + 1]));
      }
    }
    return Slice(object, bounds[0], bounds[1], bounds[2]);
  }
  if (object.IsUndefined() || object.IsNone()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: cannot take '", e.kind == Expr::Kind::kAttr ? e.name : "[...]",
                     "' of an ", object.IsNone() ? "None" : "undefined", " value"));
  }
  if (e.kind == Expr::Kind::kAttr) return object.Attr(e.name);
  ASSIGN_OR_RETURN(Value key, Eval(*e.args[1]));
  return object.Index(key);
}

absl::StatusOr<Value> Interpreter::EvalFilterOrTest(const Expr& e) {
  std::vector<Value> args;
  Kwargs kwargs;
  RETURN_IF_ERROR(EvalArgs(e, 0, &args, &kwargs));
  const Value input = args.front();
  args.erase(args.begin());
  if (e.kind == Expr::Kind::kFilter) return ApplyFilter(e.name, input, args, kwargs);
  ASSIGN_OR_RETURN(bool result, ApplyTest(e.name, input, args));
  return Value(result != e.negated);
}

absl::StatusOr<Value> Interpreter::Eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral:
      return e.literal;
    case Expr::Kind::kName:
      return Lookup(e.name);
    case Expr::Kind::kList:
    case Expr::Kind::kDict:
      return EvalCollection(e);
    case Expr::Kind::kUnary: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.args[0]));
      if (e.name == "not") return Value(!v.Truthy());
      if (!v.IsNumber()) return OperandError(e.name, Value(0), v);
      if (e.name == "+") return v;
      return v.kind() == Value::Kind::kInt ? Value(-v.AsInt()) : Value(-v.AsFloat());
    }
    case Expr::Kind::kBinary:
      return EvalBinary(e);
    case Expr::Kind::kAttr:
    case Expr::Kind::kIndex:
    case Expr::Kind::kSlice:
      return EvalAccess(e);
    case Expr::Kind::kCall:
      return EvalCall(e);
    case Expr::Kind::kFilter:
    case Expr::Kind::kTest:
      return EvalFilterOrTest(e);
    case Expr::Kind::kCond: {
      ASSIGN_OR_RETURN(Value cond, Eval(*e.args[1]));
      if (cond.Truthy()) return Eval(*e.args[0]);
      return e.args[2] ? Eval(*e.args[2]) : Value();
    }
  }
  return Value();
}

}  // namespace

absl::StatusOr<std::string> Render(const Body& tree, const Dict& globals) {
  Interpreter interpreter(globals);
  ASSIGN_OR_RETURN(Flow flow, interpreter.Exec(tree));
  (void)flow;
  return interpreter.TakeOutput();
}

}  // namespace moe::text::jinja
