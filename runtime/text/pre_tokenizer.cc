// Pre-tokenizer implementations (see pre_tokenizer.h).
#include "runtime/text/pre_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/text/normalizer.h"
#include "runtime/text/regex.h"

namespace moe::text {
namespace {

using json = nlohmann::json;
using Span = std::pair<size_t, size_t>;

enum class Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<Behavior> ParseBehavior(const std::string& name) {
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("unknown Split behavior '", name, "'"));
}

// Cuts [begin, end) at the given sorted, non-overlapping matches, by `behavior`.
void CutSpan(Span span, const std::vector<Span>& matches, Behavior behavior,
             std::vector<Span>* out) {
  size_t last = span.first;
  size_t pending = span.first;  // start of a piece waiting for a following match to merge
  bool prev_was_match = false;
  for (const Span& m : matches) {
    const bool gap = m.first > last;
    switch (behavior) {
      case Behavior::kIsolated:
        if (gap) out->push_back({last, m.first});
        out->push_back(m);
        break;
      case Behavior::kRemoved:
        if (gap) out->push_back({last, m.first});
        break;
      case Behavior::kMergedWithPrevious:
        out->push_back({last, m.second});
        break;
      case Behavior::kMergedWithNext:
        if (m.first > pending) out->push_back({pending, m.first});
        pending = m.first;
        break;
      case Behavior::kContiguous:
        if (gap) out->push_back({last, m.first});
        if (prev_was_match && !gap) {
          out->back().second = m.second;
        } else {
          out->push_back(m);
        }
        break;
    }
    prev_was_match = true;
    last = m.second;
  }
  if (behavior == Behavior::kMergedWithNext) {
    if (span.second > pending) out->push_back({pending, span.second});
  } else if (span.second > last) {
    out->push_back({last, span.second});
  }
}

class RegexSplit final : public PreTokenizer {
 public:
  RegexSplit(std::unique_ptr<Regex> regex, std::string literal, Behavior behavior)
      : regex_(std::move(regex)), literal_(std::move(literal)), behavior_(behavior) {}

  absl::Status Split(Words* words, bool at_input_start) const override {
    std::vector<Span> out;
    out.reserve(words->spans.size() * 2);
    std::vector<Span> matches;
    for (const Span& span : words->spans) {
      matches.clear();
      RETURN_IF_ERROR(FindMatches(words->View(span.first, span.second), span.first, &matches));
      CutSpan(span, matches, behavior_, &out);
    }
    words->spans = std::move(out);
    return absl::OkStatus();
  }

 private:
  absl::Status FindMatches(std::string_view text, size_t base, std::vector<Span>* matches) const {
    if (regex_ == nullptr) {
      for (size_t pos = text.find(literal_); pos != std::string_view::npos;
           pos = text.find(literal_, pos + literal_.size())) {
        matches->push_back({base + pos, base + pos + literal_.size()});
      }
      return absl::OkStatus();
    }
    return regex_->ForEachMatch(text, [&](size_t b, size_t e) {
      matches->push_back({base + b, base + e});
    });
  }

  std::unique_ptr<Regex> regex_;  // null for a literal pattern
  std::string literal_;
  Behavior behavior_;
};

// Rewrites each word with `rewrite` and rebuilds the text from the rewritten words.
template <typename F>
void RewriteWords(Words* words, F rewrite) {
  std::string text;
  text.reserve(words->text.size() + words->spans.size() * 3);
  std::vector<Span> spans;
  spans.reserve(words->spans.size());
  for (const Span& span : words->spans) {
    std::string word(words->View(span.first, span.second));
    rewrite(span, &word);
    spans.push_back({text.size(), text.size() + word.size()});
    text += word;
  }
  words->text = std::move(text);
  words->spans = std::move(spans);
}

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> gpt2)
      : add_prefix_space_(add_prefix_space) {
    if (gpt2 != nullptr) {
      gpt2_split_ = std::make_unique<RegexSplit>(std::move(gpt2), "", Behavior::kIsolated);
    }
  }

  absl::Status Split(Words* words, bool at_input_start) const override {
    if (add_prefix_space_) {
      RewriteWords(words, [](Span, std::string* w) {
        if (w->empty() || (*w)[0] != ' ') w->insert(0, " ");
      });
    }
    if (gpt2_split_ == nullptr) return absl::OkStatus();
    return gpt2_split_->Split(words, at_input_start);
  }
  bool byte_level() const override { return true; }

 private:
  bool add_prefix_space_;
  std::unique_ptr<RegexSplit> gpt2_split_;  // null when use_regex is false
};

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}

  absl::Status Split(Words* words, bool at_input_start) const override {
    RewriteWords(words, [&](Span span, std::string* w) {
      ReplaceAll(" ", replacement_, w);
      const bool starts = w->compare(0, replacement_.size(), replacement_) == 0;
      const bool first = at_input_start && span.first == 0;
      if (!starts && (prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && first))) {
        w->insert(0, replacement_);
      }
    });
    if (!split_) return absl::OkStatus();
    return RegexSplit(nullptr, replacement_, Behavior::kMergedWithNext).Split(words, false);
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status Split(Words* words, bool at_input_start) const override {
    for (const auto& step : steps_) RETURN_IF_ERROR(step->Split(words, at_input_start));
    return absl::OkStatus();
  }
  bool byte_level() const override { return !steps_.empty() && steps_.back()->byte_level(); }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSplit(const json& spec) {
  if (spec.value("invert", false)) {
    return absl::UnimplementedError("inverted Split pre-tokenizers are not supported");
  }
  ASSIGN_OR_RETURN(Behavior behavior, ParseBehavior(spec.at("behavior").get<std::string>()));
  const json& pattern = spec.at("pattern");
  if (pattern.contains("String")) {
    return std::make_unique<RegexSplit>(nullptr, pattern["String"].get<std::string>(), behavior);
  }
  ASSIGN_OR_RETURN(auto regex, Regex::Compile(pattern.at("Regex").get<std::string>()));
  return std::make_unique<RegexSplit>(std::move(regex), "", behavior);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeMetaspace(const json& spec) {
  const std::string scheme = spec.value("prepend_scheme", "always");
  MetaspacePreTokenizer::Prepend prepend = MetaspacePreTokenizer::Prepend::kAlways;
  if (scheme == "first") {
    prepend = MetaspacePreTokenizer::Prepend::kFirst;
  } else if (scheme == "never") {
    prepend = MetaspacePreTokenizer::Prepend::kNever;
  } else if (scheme != "always") {
    return absl::InvalidArgumentError(absl::StrCat("unknown Metaspace prepend_scheme ", scheme));
  }
  return std::make_unique<MetaspacePreTokenizer>(spec.value("replacement", "\xE2\x96\x81"), prepend,
                                                 spec.value("split", true));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeUnchecked(const json& spec) {
  const std::string type = spec.at("type").get<std::string>();
  if (type == "Split") return MakeSplit(spec);
  if (type == "Metaspace") return MakeMetaspace(spec);
  if (type == "ByteLevel") {
    std::unique_ptr<Regex> gpt2;
    if (spec.value("use_regex", true)) {
      ASSIGN_OR_RETURN(gpt2, Regex::Compile(kGpt2Pattern));
    }
    return std::make_unique<ByteLevelPreTokenizer>(spec.value("add_prefix_space", false),
                                                   std::move(gpt2));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const json& step : spec.at("pretokenizers")) {
      ASSIGN_OR_RETURN(auto pre, MakePreTokenizer(step));
      if (pre) steps.push_back(std::move(pre));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported pre-tokenizer type '", type,
                                               "' (supported: Split, ByteLevel, Metaspace, "
                                               "Sequence)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const json& spec) {
  if (spec.is_null()) return nullptr;
  try {
    return MakeUnchecked(spec);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad pre_tokenizer in tokenizer.json: ", e.what(), " in ", spec.dump()));
  }
}

}  // namespace moe::text
