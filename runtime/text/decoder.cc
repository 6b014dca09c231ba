// Decoder implementations (see decoder.h).
#include "runtime/text/decoder.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/status_macros.h"
#include "runtime/text/byte_level.h"
#include "runtime/text/normalizer.h"
#include "runtime/text/utf8.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

class ByteLevelDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      // A token outside the byte-level alphabet (an added token) stands for its own bytes.
      std::optional<std::string> raw = ByteLevelToBytes(token);
      bytes += raw ? *raw : token;
    }
    *tokens = {Utf8Lossy(bytes)};
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool prepends)
      : replacement_(std::move(replacement)), prepends_(prepends) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      // As tokenizers does: in the first token every replacement goes when the pre-tokenizer
      // prepends one; elsewhere each becomes a space.
      ReplaceAll(replacement_, i == 0 && prepends_ ? "" : " ", &(*tokens)[i]);
    }
  }

 private:
  std::string replacement_;
  bool prepends_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) ReplaceAll(from_, to_, &token);
  }

 private:
  std::string from_, to_;
};

// "<0xE4>" -> 0xE4, or -1.
int ParseByteToken(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = token[i];
    const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string pending;  // consecutive byte tokens
    auto flush = [&] {
      if (pending.empty()) return;
      if (ValidateUtf8(pending).ok()) {
        out.push_back(pending);
      } else {
        // tokenizers gives one U+FFFD per byte when the run is not valid UTF-8.
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back(kReplacementChar);
      }
      pending.clear();
    };
    for (std::string& token : *tokens) {
      const int byte = ParseByteToken(token);
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    *tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    *tokens = {absl::StrJoin(*tokens, "")};
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      size_t begin = 0, end = token.size();
      for (size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0; ++i) {
        begin += content_.size();
      }
      for (size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                         token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

absl::StatusOr<std::unique_ptr<Decoder>> MakeUnchecked(const json& spec) {
  const std::string type = spec.at("type").get<std::string>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Metaspace") {
    return std::make_unique<MetaspaceDecoder>(spec.value("replacement", "\xE2\x96\x81"),
                                              spec.value("prepend_scheme", "always") != "never");
  }
  if (type == "Replace") {
    const json& pattern = spec.at("pattern");
    if (!pattern.contains("String")) {
      return absl::UnimplementedError("Replace decoder with a regex pattern is not supported");
    }
    return std::make_unique<ReplaceDecoder>(pattern["String"].get<std::string>(),
                                            spec.at("content").get<std::string>());
  }
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(spec.at("content").get<std::string>(),
                                          spec.value("start", 0), spec.value("stop", 0));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const json& step : spec.at("decoders")) {
      ASSIGN_OR_RETURN(auto decoder, MakeDecoder(step));
      if (decoder) steps.push_back(std::move(decoder));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  return absl::UnimplementedError(
      absl::StrCat("unsupported decoder type '", type,
                   "' (supported: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, "
                   "Sequence)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const json& spec) {
  if (spec.is_null()) return nullptr;
  try {
    return MakeUnchecked(spec);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad decoder in tokenizer.json: ", e.what(), " in ", spec.dump()));
  }
}

std::string DecodeTokens(const Decoder* decoder, std::vector<std::string> tokens) {
  if (decoder == nullptr) return absl::StrJoin(tokens, " ");
  decoder->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

}  // namespace moe::text
