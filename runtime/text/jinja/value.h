// jinja::Value: the dynamic values a chat template computes with, with Python / Jinja2
// semantics for truth, equality, ordering and str() (None -> "None", True -> "True",
// lists and dicts in Python repr). Lists and dicts are shared, like Python objects.
//
//   Value v = Value::FromJson(messages);         // ordered JSON keeps dict order for tojson
//   if (v.Truthy()) out += v.Index(0).Attr("content").Str();
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace moe::text::jinja {

class Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion order, like Python

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace };

  Value() = default;  // undefined
  static Value None();
  Value(bool b);                                    // NOLINT: implicit, as literals are
  Value(int64_t i);                                 // NOLINT
  Value(int i) : Value(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double f);                                  // NOLINT
  Value(std::string s);                             // NOLINT
  Value(const char* s) : Value(std::string(s)) {}   // NOLINT
  static Value MakeList(List items);
  static Value MakeDict(Dict items);
  static Value MakeNamespace(Dict items);  // a mutable attribute bag (namespace())
  static Value FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool IsUndefined() const { return kind_ == Kind::kUndefined; }
  bool IsNone() const { return kind_ == Kind::kNone; }
  bool IsString() const { return kind_ == Kind::kString; }
  bool IsNumber() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool IsList() const { return kind_ == Kind::kList; }
  bool IsMapping() const { return kind_ == Kind::kDict || kind_ == Kind::kNamespace; }

  bool AsBool() const { return bool_; }
  int64_t AsInt() const { return kind_ == Kind::kFloat ? static_cast<int64_t>(float_) : int_; }
  double AsFloat() const { return kind_ == Kind::kInt ? static_cast<double>(int_) : float_; }
  const std::string& AsString() const { return *string_; }
  const List& AsList() const { return *list_; }
  const Dict& AsDict() const { return *dict_; }
  Dict& MutableDict() const { return *dict_; }  // namespaces are mutable

  bool Truthy() const;
  // Python str(): what {{ value }} prints.
  std::string Str() const;
  // Python repr() (strings quoted), used inside lists and dicts.
  std::string Repr() const;
  // Python json.dumps(value, ensure_ascii=False) with optional indent, as transformers' tojson.
  std::string ToJson(int indent = -1) const;
  // Length of a string (in code points), list or dict; -1 for other kinds.
  int64_t Length() const;

  // Dict member or undefined (namespace members too).
  Value Attr(const std::string& name) const;
  // List / string element with Python negative indexing, dict member; undefined if missing.
  Value Index(const Value& key) const;

  bool Equals(const Value& other) const;
  // Python ordering for numbers and strings; false for other kinds.
  bool Less(const Value& other) const;
  const char* TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool bool_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::shared_ptr<const std::string> string_;
  std::shared_ptr<const List> list_;
  std::shared_ptr<Dict> dict_;
};

// The code points of a UTF-8 string, each as its own UTF-8 string (for slicing and indexing).
std::vector<std::string> SplitChars(const std::string& s);

}  // namespace moe::text::jinja
