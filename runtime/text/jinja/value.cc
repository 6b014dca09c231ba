// jinja::Value (see value.h).
#include "runtime/text/jinja/value.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/text/utf8.h"

namespace moe::text::jinja {
namespace {

// Python repr() of a float: shortest round-trip digits, ".0" on integral values.
std::string FloatRepr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buffer[64];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), f);
  std::string s(buffer, end);
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

void AppendJsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          *out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

std::string StringRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const char quote = has_single && s.find('"') == std::string::npos ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    if (c == quote || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
      out += absl::StrFormat("\\x%02x", static_cast<unsigned char>(c));
    } else {
      out.push_back(c);
    }
  }
  out.push_back(quote);
  return out;
}

void AppendJson(const Value& v, int indent, int depth, std::string* out) {
  const std::string newline =
      indent < 0 ? "" : "\n" + std::string(static_cast<size_t>(indent) * (depth + 1), ' ');
  const std::string close =
      indent < 0 ? "" : "\n" + std::string(static_cast<size_t>(indent) * depth, ' ');
  const char* item_sep = indent < 0 ? ", " : ",";
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      *out += "null";
      return;
    case Value::Kind::kBool:
      *out += v.AsBool() ? "true" : "false";
      return;
    case Value::Kind::kInt:
      *out += absl::StrCat(v.AsInt());
      return;
    case Value::Kind::kFloat:
      *out += FloatRepr(v.AsFloat());
      return;
    case Value::Kind::kString:
      AppendJsonString(v.AsString(), out);
      return;
    case Value::Kind::kList:
      if (v.AsList().empty()) {
        *out += "[]";
        return;
      }
      *out += "[";
      for (size_t i = 0; i < v.AsList().size(); ++i) {
        *out += (i ? item_sep : "") + newline;
        AppendJson(v.AsList()[i], indent, depth + 1, out);
      }
      *out += close + "]";
      return;
    case Value::Kind::kDict:
    case Value::Kind::kNamespace:
      if (v.AsDict().empty()) {
        *out += "{}";
        return;
      }
      *out += "{";
      for (size_t i = 0; i < v.AsDict().size(); ++i) {
        *out += (i ? item_sep : "") + newline;
        AppendJsonString(v.AsDict()[i].first, out);
        *out += ": ";
        AppendJson(v.AsDict()[i].second, indent, depth + 1, out);
      }
      *out += close + "}";
      return;
  }
}

}  // namespace

std::vector<std::string> SplitChars(const std::string& s) {
  std::vector<std::string> chars;
  for (size_t pos = 0; pos < s.size();) {
    const size_t n = std::min(CharLength(static_cast<unsigned char>(s[pos])), s.size() - pos);
    chars.push_back(s.substr(pos, n));
    pos += n;
  }
  return chars;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value::Value(bool b) : kind_(Kind::kBool), bool_(b) {}
Value::Value(int64_t i) : kind_(Kind::kInt), int_(i) {}
Value::Value(double f) : kind_(Kind::kFloat), float_(f) {}
Value::Value(std::string s)
    : kind_(Kind::kString), string_(std::make_shared<const std::string>(std::move(s))) {}

Value Value::MakeList(List items) {
  Value v;
  v.kind_ = Kind::kList;
  v.list_ = std::make_shared<const List>(std::move(items));
  return v;
}

Value Value::MakeDict(Dict items) {
  Value v;
  v.kind_ = Kind::kDict;
  v.dict_ = std::make_shared<Dict>(std::move(items));
  return v;
}

Value Value::MakeNamespace(Dict items) {
  Value v = MakeDict(std::move(items));
  v.kind_ = Kind::kNamespace;
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float:
      return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& item : json) items.push_back(FromJson(item));
      return MakeList(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict items;
      for (const auto& [key, item] : json.items()) items.emplace_back(key, FromJson(item));
      return MakeDict(std::move(items));
    }
    default:
      return Value();
  }
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return bool_;
    case Kind::kInt:
      return int_ != 0;
    case Kind::kFloat:
      return float_ != 0;
    case Kind::kString:
      return !string_->empty();
    case Kind::kList:
      return !list_->empty();
    case Kind::kDict:
      return !dict_->empty();
    case Kind::kNamespace:
      return true;
  }
  return false;
}

std::string Value::Str() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return *string_;
    default:
      return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return bool_ ? "True" : "False";
    case Kind::kInt:
      return absl::StrCat(int_);
    case Kind::kFloat:
      return FloatRepr(float_);
    case Kind::kString:
      return StringRepr(*string_);
    case Kind::kList: {
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) out += (i ? ", " : "") + (*list_)[i].Repr();
      return out + "]";
    }
    case Kind::kDict:
    case Kind::kNamespace: {
      std::string out = kind_ == Kind::kNamespace ? "<Namespace {" : "{";
      for (size_t i = 0; i < dict_->size(); ++i) {
        out += (i ? ", " : "") + StringRepr((*dict_)[i].first) + ": " + (*dict_)[i].second.Repr();
      }
      return out + (kind_ == Kind::kNamespace ? "}>" : "}");
    }
  }
  return "";
}

std::string Value::ToJson(int indent) const {
  std::string out;
  AppendJson(*this, indent, 0, &out);
  return out;
}

int64_t Value::Length() const {
  if (kind_ == Kind::kString) return static_cast<int64_t>(SplitChars(*string_).size());
  if (kind_ == Kind::kList) return static_cast<int64_t>(list_->size());
  if (IsMapping()) return static_cast<int64_t>(dict_->size());
  return -1;
}

Value Value::Attr(const std::string& name) const {
  if (!IsMapping()) return Value();
  for (const auto& [key, value] : *dict_) {
    if (key == name) return value;
  }
  return Value();
}

Value Value::Index(const Value& key) const {
  if (IsMapping()) return key.IsString() ? Attr(key.AsString()) : Value();
  if (key.kind() != Kind::kInt) return Value();
  int64_t i = key.AsInt();
  if (kind_ == Kind::kList) {
    const auto n = static_cast<int64_t>(list_->size());
    if (i < 0) i += n;
    return i >= 0 && i < n ? (*list_)[i] : Value();
  }
  if (kind_ == Kind::kString) {
    const std::vector<std::string> chars = SplitChars(*string_);
    const auto n = static_cast<int64_t>(chars.size());
    if (i < 0) i += n;
    return i >= 0 && i < n ? Value(chars[i]) : Value();
  }
  return Value();
}

bool Value::Equals(const Value& other) const {
  if (IsNumber() && other.IsNumber()) return AsFloat() == other.AsFloat();
  if ((kind_ == Kind::kBool) != (other.kind_ == Kind::kBool)) {
    // Python: True == 1; keep it simple and compare as numbers.
    const auto num = [](const Value& v) {
      return v.kind_ == Kind::kBool ? (v.bool_ ? 1.0 : 0.0) : v.AsFloat();
    };
    return (IsNumber() || other.IsNumber()) && num(*this) == num(other);
  }
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return bool_ == other.bool_;
    case Kind::kString:
      return *string_ == *other.string_;
    case Kind::kList:
      if (list_->size() != other.list_->size()) return false;
      for (size_t i = 0; i < list_->size(); ++i) {
        if (!(*list_)[i].Equals((*other.list_)[i])) return false;
      }
      return true;
    case Kind::kDict:
    case Kind::kNamespace:
      if (dict_->size() != other.dict_->size()) return false;
      for (const auto& [key, value] : *dict_) {
        if (!other.Attr(key).Equals(value)) return false;
      }
      return true;
    default:
      return false;
  }
}

bool Value::Less(const Value& other) const {
  if (IsNumber() && other.IsNumber()) return AsFloat() < other.AsFloat();
  if (IsString() && other.IsString()) return *string_ < *other.string_;
  return false;
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "none";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "string";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "namespace";
  }
  return "?";
}

}  // namespace moe::text::jinja
