// Filters, tests and methods (see builtins.h).
#include "runtime/text/jinja/builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/text/added_vocabulary.h"
#include "runtime/text/utf8.h"

namespace moe::text::jinja {
namespace {

absl::Status TypeError(const std::string& what, const Value& v) {
  return absl::InvalidArgumentError(
      absl::StrCat("chat template: ", what, " does not apply to a ", v.TypeName()));
}

// Python str.isspace() for one code point.
bool IsPythonSpace(char32_t c) { return IsUnicodeWhitespace(c) || (c >= 0x1C && c <= 0x1F); }

Value Arg(const std::vector<Value>& args, const Kwargs& kwargs, size_t index, const char* name) {
  if (index < args.size()) return args[index];
  for (const auto& [key, value] : kwargs) {
    if (key == name) return value;
  }
  return Value();
}

std::vector<std::string> SplitString(const std::string& s, const Value& sep, int64_t max_split) {
  std::vector<std::string> parts;
  if (sep.IsString()) {
    const std::string& d = sep.AsString();
    size_t start = 0;
    for (size_t at = s.find(d); at != std::string::npos && d.size() > 0; at = s.find(d, start)) {
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) >= max_split) break;
      parts.push_back(s.substr(start, at - start));
      start = at + d.size();
    }
    parts.push_back(s.substr(start));
    return parts;
  }
  // No separator: runs of white space split, and empty parts are dropped.
  const std::vector<std::string> chars = SplitChars(s);
  std::string current;
  for (size_t i = 0; i < chars.size(); ++i) {
    if (IsPythonSpace(DecodeChar(chars[i], 0))) {
      if (!current.empty()) parts.push_back(std::move(current));
      current.clear();
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) >= max_split) {
        size_t j = i;
        while (j < chars.size() && IsPythonSpace(DecodeChar(chars[j], 0))) ++j;
        for (; j < chars.size(); ++j) current += chars[j];
        break;
      }
    } else {
      current += chars[i];
    }
  }
  if (!current.empty()) parts.push_back(std::move(current));
  return parts;
}

std::string MapAscii(std::string s, int (*f)(int)) {
  for (char& c : s) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  return s;
}

std::string Capitalize(const std::string& s) {
  std::string out = MapAscii(s, ::tolower);
  if (!out.empty()) out[0] = static_cast<char>(::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::string Title(const std::string& s) {
  std::string out = s;
  bool start = true;
  for (char& c : out) {
    const bool alpha = std::isalpha(static_cast<unsigned char>(c));
    if (alpha) c = static_cast<char>(start ? ::toupper(c) : ::tolower(c));
    start = !alpha;
  }
  return out;
}

bool StartsOrEnds(const std::string& s, const Value& affix, bool starts) {
  auto one = [&](const std::string& a) {
    if (a.size() > s.size()) return false;
    return starts ? s.compare(0, a.size(), a) == 0
                  : s.compare(s.size() - a.size(), a.size(), a) == 0;
  };
  if (affix.IsString()) return one(affix.AsString());
  if (affix.IsList()) {
    for (const Value& a : affix.AsList()) {
      if (a.IsString() && one(a.AsString())) return true;
    }
  }
  return false;
}

std::string ReplaceString(const std::string& s, const std::string& from, const std::string& to,
                          int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t start = 0;
  for (size_t at = s.find(from); at != std::string::npos && count != 0; at = s.find(from, start)) {
    out += s.substr(start, at - start) + to;
    start = at + from.size();
    --count;
  }
  return out + s.substr(start);
}

absl::StatusOr<Value> StringMethod(const std::string& s, const std::string& name,
                                   const std::vector<Value>& args, const Kwargs& kwargs) {
  if (name == "strip") return Value(StripString(s, Arg(args, kwargs, 0, "chars"), true, true));
  if (name == "lstrip") return Value(StripString(s, Arg(args, kwargs, 0, "chars"), true, false));
  if (name == "rstrip") return Value(StripString(s, Arg(args, kwargs, 0, "chars"), false, true));
  if (name == "startswith") return Value(StartsOrEnds(s, Arg(args, kwargs, 0, "prefix"), true));
  if (name == "endswith") return Value(StartsOrEnds(s, Arg(args, kwargs, 0, "suffix"), false));
  if (name == "upper") return Value(MapAscii(s, ::toupper));
  if (name == "lower") return Value(MapAscii(s, ::tolower));
  if (name == "title") return Value(Title(s));
  if (name == "capitalize") return Value(Capitalize(s));
  if (name == "split") {
    const Value max = Arg(args, kwargs, 1, "maxsplit");
    List parts;
    for (std::string& part : SplitString(s, Arg(args, kwargs, 0, "sep"),
                                         max.kind() == Value::Kind::kInt ? max.AsInt() : -1)) {
      parts.emplace_back(std::move(part));
    }
    return Value::MakeList(std::move(parts));
  }
  if (name == "replace") {
    const Value from = Arg(args, kwargs, 0, "old"), to = Arg(args, kwargs, 1, "new");
    const Value count = Arg(args, kwargs, 2, "count");
    if (!from.IsString() || !to.IsString()) return TypeError("replace() with non-strings", from);
    return Value(ReplaceString(s, from.AsString(), to.AsString(),
                               count.kind() == Value::Kind::kInt ? count.AsInt() : -1));
  }
  return absl::UnimplementedError(
      absl::StrCat("chat template: string method '", name, "' is not supported"));
}

absl::StatusOr<Value> DictMethod(const Value& d, const std::string& name,
                                 const std::vector<Value>& args, const Kwargs& kwargs) {
  if (name == "items" || name == "keys" || name == "values") {
    List out;
    for (const auto& [key, value] : d.AsDict()) {
      if (name == "items") out.push_back(Value::MakeList({Value(key), value}));
      if (name == "keys") out.emplace_back(key);
      if (name == "values") out.push_back(value);
    }
    return Value::MakeList(std::move(out));
  }
  if (name == "get") {
    const Value found = d.Index(Arg(args, kwargs, 0, "key"));
    if (!found.IsUndefined()) return found;
    const Value fallback = Arg(args, kwargs, 1, "default");
    return fallback.IsUndefined() ? Value::None() : fallback;
  }
  return absl::UnimplementedError(
      absl::StrCat("chat template: dict method '", name, "' is not supported"));
}

absl::StatusOr<Value> SequenceFilter(const std::string& name, const Value& input,
                                     const std::vector<Value>& args, const Kwargs& kwargs) {
  List items;
  if (input.IsList()) {
    items = input.AsList();
  } else if (input.IsString()) {
    for (std::string& c : SplitChars(input.AsString())) items.emplace_back(std::move(c));
  } else if (input.IsMapping()) {
    for (const auto& [key, value] : input.AsDict()) items.emplace_back(key);
  } else {
    return TypeError(absl::StrCat("filter '", name, "'"), input);
  }
  if (name == "list") return Value::MakeList(std::move(items));
  if (name == "first") return items.empty() ? Value() : items.front();
  if (name == "last") return items.empty() ? Value() : items.back();
  if (name == "reverse") {
    std::reverse(items.begin(), items.end());
    if (input.IsString()) {
      std::string out;
      for (const Value& c : items) out += c.AsString();
      return Value(out);
    }
    return Value::MakeList(std::move(items));
  }
  // join
  const Value sep = Arg(args, kwargs, 0, "d");
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    out += (i > 0 && sep.IsString() ? sep.AsString() : "") + items[i].Str();
  }
  return Value(out);
}

}  // namespace

std::string StripString(const std::string& s, const Value& chars, bool left, bool right) {
  const std::vector<std::string> cs = SplitChars(s);
  std::vector<std::string> set;
  const bool custom = chars.IsString();
  if (custom) set = SplitChars(chars.AsString());
  auto strip = [&](const std::string& c) {
    return custom ? std::find(set.begin(), set.end(), c) != set.end()
                  : IsPythonSpace(DecodeChar(c, 0));
  };
  size_t begin = 0, end = cs.size();
  while (left && begin < end && strip(cs[begin])) ++begin;
  while (right && end > begin && strip(cs[end - 1])) --end;
  std::string out;
  for (size_t i = begin; i < end; ++i) out += cs[i];
  return out;
}

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& input,
                                  const std::vector<Value>& args, const Kwargs& kwargs) {
  if (name == "length" || name == "count") {
    if (input.Length() < 0) return TypeError("filter 'length'", input);
    return Value(input.Length());
  }
  if (name == "tojson") {
    const Value indent = Arg(args, kwargs, 0, "indent");
    return Value(
        input.ToJson(indent.kind() == Value::Kind::kInt ? static_cast<int>(indent.AsInt()) : -1));
  }
  if (name == "string") return Value(input.Str());
  if (name == "safe") return input;
  if (name == "trim")
    return Value(StripString(input.Str(), Arg(args, kwargs, 0, "chars"), true, true));
  if (name == "upper") return Value(MapAscii(input.Str(), ::toupper));
  if (name == "lower") return Value(MapAscii(input.Str(), ::tolower));
  if (name == "capitalize") return Value(Capitalize(input.Str()));
  if (name == "title") return Value(Title(input.Str()));
  if (name == "default" || name == "d") {
    const bool boolean = Arg(args, kwargs, 1, "boolean").Truthy();
    const bool use_default = input.IsUndefined() || (boolean && !input.Truthy());
    return use_default ? Arg(args, kwargs, 0, "default_value") : input;
  }
  if (name == "replace") return CallMethod(Value(input.Str()), "replace", args, kwargs);
  if (name == "int") return Value(input.IsNumber() ? input.AsInt() : 0);
  if (name == "float") return Value(input.IsNumber() ? input.AsFloat() : 0.0);
  if (name == "abs") {
    if (input.kind() == Value::Kind::kInt) return Value(std::abs(input.AsInt()));
    if (input.IsNumber()) return Value(std::fabs(input.AsFloat()));
    return TypeError("filter 'abs'", input);
  }
  if (name == "items") {
    if (!input.IsMapping()) return TypeError("filter 'items'", input);
    return DictMethod(input, "items", {}, {});
  }
  if (name == "list" || name == "first" || name == "last" || name == "reverse" || name == "join") {
    return SequenceFilter(name, input, args, kwargs);
  }
  return absl::UnimplementedError(
      absl::StrCat("chat template: filter '", name, "' is not supported"));
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& v,
                               const std::vector<Value>& args) {
  using K = Value::Kind;
  if (name == "defined") return !v.IsUndefined();
  if (name == "undefined") return v.IsUndefined();
  if (name == "none") return v.IsNone();
  if (name == "string") return v.IsString();
  if (name == "number") return v.IsNumber();
  if (name == "integer") return v.kind() == K::kInt;
  if (name == "float") return v.kind() == K::kFloat;
  if (name == "boolean") return v.kind() == K::kBool;
  if (name == "true") return v.kind() == K::kBool && v.AsBool();
  if (name == "false") return v.kind() == K::kBool && !v.AsBool();
  if (name == "mapping") return v.IsMapping();
  if (name == "iterable") return v.IsList() || v.IsString() || v.IsMapping();
  if (name == "sequence") return v.IsList() || v.IsString() || v.IsMapping();
  if (name == "even" || name == "odd") {
    if (v.kind() != K::kInt) return TypeError(absl::StrCat("test '", name, "'"), v);
    return (v.AsInt() % 2 == 0) == (name == "even");
  }
  if (name == "eq" || name == "equalto") {
    if (args.size() != 1) return absl::InvalidArgumentError("test 'eq' takes one argument");
    return v.Equals(args[0]);
  }
  return absl::UnimplementedError(
      absl::StrCat("chat template: test '", name, "' is not supported"));
}

absl::StatusOr<Value> CallMethod(const Value& object, const std::string& name,
                                 const std::vector<Value>& args, const Kwargs& kwargs) {
  if (object.IsString()) return StringMethod(object.AsString(), name, args, kwargs);
  if (object.kind() == Value::Kind::kDict) return DictMethod(object, name, args, kwargs);
  if (object.IsUndefined()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template: called '", name, "' on an undefined value"));
  }
  return absl::UnimplementedError(absl::StrCat("chat template: method '", name, "' of a ",
                                               object.TypeName(), " is not supported"));
}

}  // namespace moe::text::jinja
