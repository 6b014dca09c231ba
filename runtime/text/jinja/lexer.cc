// Template lexer (see lexer.h).
#include "runtime/text/jinja/lexer.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/text/utf8.h"

namespace moe::text::jinja {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::string NormalizeNewlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline=False
  return out;
}

// Unescapes a Python string literal body (\n, \t, \xNN, \uXXXX, ...).
std::string Unescape(const std::string& body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out.push_back(body[i]);
      continue;
    }
    const char c = body[++i];
    const std::string simple = "n\nt\tr\r\\\\''\"\"b\bf\fv\va\a0";
    const size_t at = simple.find(c);
    if (c == '0') {
      out.push_back('\0');
    } else if (at != std::string::npos && at % 2 == 0) {
      out.push_back(simple[at + 1]);
    } else if (c == 'x' || c == 'u' || c == 'U') {
      const size_t digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
      const std::string hex = body.substr(i + 1, digits);
      if (hex.size() == digits && std::all_of(hex.begin(), hex.end(), ::isxdigit)) {
        const unsigned long cp = std::stoul(hex, nullptr, 16);
        const bool valid = cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
        AppendUtf8(valid ? static_cast<char32_t>(cp) : 0xFFFD, &out);
        i += digits;
      } else {
        out += absl::StrCat("\\", std::string(1, c));
      }
    } else {
      out.push_back('\\');  // Python keeps unknown escapes as they are
      out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<std::vector<Token>> Tokenize(const std::string& s, int line) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (IsSpace(c)) {
      ++i;
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      tokens.push_back({Token::Type::kName, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool is_float =
          j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]));
      if (is_float) {
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      tokens.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt, s.substr(i, j - i)});
      i = j;
    } else if (c == '\'' || c == '"') {
      size_t j = i + 1;
      while (j < s.size() && s[j] != c) j += s[j] == '\\' ? 2 : 1;
      if (j >= s.size()) {
        return absl::InvalidArgumentError(absl::StrCat("unterminated string on line ", line));
      }
      tokens.push_back({Token::Type::kString, Unescape(s.substr(i + 1, j - i - 1))});
      i = j + 1;
    } else {
      static const char* kTwo[] = {"==", "!=", "<=", ">=", "//", "**"};
      std::string op(1, c);
      for (const char* two : kTwo) {
        if (s.compare(i, 2, two) == 0) op = two;
      }
      if (op.size() == 1 && std::string("+-*/%~<>=()[]{},.:|").find(c) == std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected character '", op, "' on line ", line));
      }
      tokens.push_back({Token::Type::kOp, op});
      i += op.size();
    }
  }
  return tokens;
}

// End of the tag that opens at `start` (index of the closing delimiter), skipping strings.
size_t FindTagEnd(const std::string& s, size_t start, const std::string& close) {
  if (close == "#}") return s.find(close, start);
  char quote = 0;
  for (size_t i = start; i + 1 < s.size(); ++i) {
    if (quote) {
      if (s[i] == '\\') {
        ++i;
      } else if (s[i] == quote) {
        quote = 0;
      }
    } else if (s[i] == '\'' || s[i] == '"') {
      quote = s[i];
    } else if (s.compare(i, 2, close) == 0) {
      return i;
    }
  }
  return std::string::npos;
}

// Removes trailing spaces/tabs of `text` when they start a line of the source (lstrip_blocks).
void LstripBlock(const std::string& source, size_t text_start, std::string* text) {
  size_t keep = text->size();
  while (keep > 0 && ((*text)[keep - 1] == ' ' || (*text)[keep - 1] == '\t')) --keep;
  const bool at_line_start =
      keep > 0 ? (*text)[keep - 1] == '\n' : (text_start == 0 || source[text_start - 1] == '\n');
  if (at_line_start) text->resize(keep);
}

}  // namespace

absl::StatusOr<std::vector<Chunk>> Lex(const std::string& raw) {
  const std::string s = NormalizeNewlines(raw);
  std::vector<Chunk> chunks;
  size_t pos = 0;
  bool strip_next = false;  // the previous tag ended with '-'
  while (pos <= s.size()) {
    size_t open = std::min({s.find("{{", pos), s.find("{%", pos), s.find("{#", pos)});
    const size_t text_start = pos;
    std::string text = s.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (strip_next)
      text.erase(0, std::find_if_not(text.begin(), text.end(), IsSpace) - text.begin());
    const int line = 1 + static_cast<int>(std::count(s.begin(), s.begin() + pos, '\n'));
    if (open == std::string::npos) {
      if (!text.empty()) chunks.push_back({Chunk::Type::kText, text, {}, line});
      break;
    }
    const char kind = s[open + 1];
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t body = open + 2;
    const bool strip_before = body < s.size() && s[body] == '-';
    const bool keep_before = body < s.size() && s[body] == '+';
    if (strip_before || keep_before) ++body;
    if (strip_before) {
      text.erase(std::find_if_not(text.rbegin(), text.rend(), IsSpace).base(), text.end());
    } else if (!keep_before && kind != '{') {
      LstripBlock(s, text_start, &text);
    }
    if (!text.empty()) chunks.push_back({Chunk::Type::kText, text, {}, line});
    const size_t end = FindTagEnd(s, body, close);
    if (end == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("tag opened on line ", line, " is not closed with '", close, "'"));
    }
    strip_next = end > body && s[end - 1] == '-';
    const std::string content = s.substr(body, end - body - (strip_next ? 1 : 0));
    pos = end + 2;
    if (!strip_next && kind != '{' && pos < s.size() && s[pos] == '\n') ++pos;  // trim_blocks
    if (kind == '#') continue;
    ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(content, line));
    chunks.push_back({kind == '{' ? Chunk::Type::kExpression : Chunk::Type::kStatement, "",
                      std::move(tokens), line});
  }
  return chunks;
}

}  // namespace moe::text::jinja
