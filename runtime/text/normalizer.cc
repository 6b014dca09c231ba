// Normalizer implementations (see normalizer.h).
#include "runtime/text/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/text/regex.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

class NfcNormalizer final : public Normalizer {
 public:
  void Normalize(std::string* text) const override {
    // Text with no code point >= U+0300 (lead byte 0xCC) is already in NFC.
    bool maybe_changes = false;
    for (char c : *text) maybe_changes |= static_cast<unsigned char>(c) >= 0xCC;
    if (!maybe_changes) return;
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
    const icu::StringPiece input(text->data(), static_cast<int32_t>(text->size()));
    if (U_FAILURE(status) || nfc->isNormalizedUTF8(input, status)) return;
    std::string out;
    icu::StringByteSink<std::string> sink(&out);
    status = U_ZERO_ERROR;
    nfc->normalizeUTF8(0, input, sink, nullptr, status);
    if (U_SUCCESS(status)) *text = std::move(out);
  }
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::string from, std::unique_ptr<Regex> regex, std::string to)
      : from_(std::move(from)), regex_(std::move(regex)), to_(std::move(to)) {}
  void Normalize(std::string* text) const override {
    if (regex_ == nullptr) {
      ReplaceAll(from_, to_, text);
      return;
    }
    std::string out;
    size_t last = 0;
    // Text is valid UTF-8, so matching cannot fail for a compiled pattern.
    regex_
        ->ForEachMatch(*text,
                       [&](size_t begin, size_t end) {
                         out.append(*text, last, begin - last);
                         out += to_;
                         last = end;
                       })
        .IgnoreError();
    out.append(*text, last);
    *text = std::move(out);
  }

 private:
  std::string from_;
  std::unique_ptr<Regex> regex_;  // when the pattern is a regex
  std::string to_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string* text) const override {
    for (const auto& step : steps_) step->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

absl::StatusOr<std::unique_ptr<Normalizer>> MakeReplace(const json& spec) {
  const json& pattern = spec.at("pattern");
  std::string to = spec.at("content").get<std::string>();
  if (pattern.contains("String")) {
    std::string from = pattern["String"].get<std::string>();
    if (from.empty()) return absl::InvalidArgumentError("Replace normalizer with empty pattern");
    return std::make_unique<ReplaceNormalizer>(std::move(from), nullptr, std::move(to));
  }
  ASSIGN_OR_RETURN(auto regex, Regex::Compile(pattern.at("Regex").get<std::string>()));
  return std::make_unique<ReplaceNormalizer>("", std::move(regex), std::move(to));
}

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizerUnchecked(const json& spec) {
  const std::string type = spec.at("type").get<std::string>();
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(spec.at("prepend").get<std::string>());
  }
  if (type == "Replace") return MakeReplace(spec);
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const json& step : spec.at("normalizers")) {
      ASSIGN_OR_RETURN(auto normalizer, MakeNormalizer(step));
      if (normalizer) steps.push_back(std::move(normalizer));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported normalizer type '", type,
                                               "' (supported: NFC, Prepend, Replace, Sequence)"));
}

}  // namespace

void ReplaceAll(std::string_view from, std::string_view to, std::string* text) {
  if (text->find(from) == std::string::npos) return;
  std::string out;
  out.reserve(text->size() + text->size() / 4);
  size_t last = 0;
  for (size_t pos = text->find(from); pos != std::string::npos; pos = text->find(from, last)) {
    out.append(*text, last, pos - last);
    out.append(to);
    last = pos + from.size();
  }
  out.append(*text, last);
  *text = std::move(out);
}

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const json& spec) {
  if (spec.is_null()) return nullptr;
  try {
    return MakeNormalizerUnchecked(spec);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad normalizer in tokenizer.json: ", e.what(), " in ", spec.dump()));
  }
}

}  // namespace moe::text
