// tokenizer_bench: encode throughput (MB/s, one thread) of our tokenizer against Hugging Face
// `tokenizers` on the same >= 10 MB of mixed text, measured in the same run.
//
// The text is generated deterministically (prose, code, CJK, Cyrillic, Arabic, emoji, digits,
// white-space runs) as documents of about 4 KB, written to a file, encoded here document by
// document, and encoded again by tools/text/hf_encode_bench.py in the given Python (one
// thread). Both print the token count and a hash of all ids, which must agree.
//
//   tokenizer_bench --python=/work/venv-text/bin/python --mb=12
//       --tokenizers=tests/data/tokenizers/gpt2,tests/data/tokenizers/qwen2
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"

ABSL_FLAG(std::string, tokenizers, "tests/data/tokenizers/gpt2",
          "comma-separated directories holding tokenizer.json");
ABSL_FLAG(double, mb, 12.0, "megabytes of text to encode (at least 10 for the record)");
ABSL_FLAG(std::string, python, "python3", "Python with the `tokenizers` package; empty: skip HF");
ABSL_FLAG(std::string, hf_script, "tools/text/hf_encode_bench.py", "the HF side of the benchmark");
ABSL_FLAG(std::string, corpus, "/tmp/moe_tokenizer_bench_corpus.txt", "where to write the text");
ABSL_FLAG(int, repeats, 2, "timed passes; the fastest counts");

namespace {

// A small deterministic generator (64-bit LCG), so every run encodes the same text.
class Lcg {
 public:
  uint64_t Next() { return state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL; }
  size_t Below(size_t n) { return static_cast<size_t>((Next() >> 33) % n); }

 private:
  uint64_t state_ = 42;
};

std::vector<std::string> MakeDocuments(double megabytes) {
  static const char* kPieces[] = {
      "The quick brown fox jumps over the lazy dog. ",
      "It's what they'd've wanted, isn't it? ",
      "Mixture-of-experts models route each token to a few experts. ",
      "\n\n",
      "\n",
      "    return x * 2;  // double it\n",
      "for (int i = 0; i < n; ++i) { sum += a[i]; }\n",
      "def forward(self, x):\n        return self.w2(F.silu(self.w1(x)) * self.w3(x))\n",
      "我爱自然语言处理，今天天气很好。",
      "日本語のテキストとカタカナ。",
      "한국어 문장입니다. ",
      "Привет, как дела? Всё хорошо. ",
      "مرحبا بالعالم ",
      "😀👍🏽👨‍👩‍👧 ",
      "🚀✨ ",
      "3.14159 2,147,483,647 20240101 ",
      "1234567890",
      "        ",
      "\t",
      "e\xCC\x81 ",
      "URL: https://example.com/a?b=c&d=e ",
      "<tag attr=\"v\">text</tag> ",
      "ümlaut façade "};
  const size_t target = static_cast<size_t>(megabytes * 1e6);
  Lcg rng;
  std::vector<std::string> docs;
  size_t total = 0;
  while (total < target) {
    std::string doc;
    while (doc.size() < 4096) doc += kPieces[rng.Below(std::size(kPieces))];
    total += doc.size();
    docs.push_back(std::move(doc));
  }
  return docs;
}

uint64_t Fnv1a(uint64_t h, const std::vector<int32_t>& ids) {
  for (int32_t id : ids) h = (h ^ static_cast<uint32_t>(id)) * 0x100000001b3ULL;
  return h;
}

struct Result {
  double mb_per_s = 0;
  size_t tokens = 0;
  uint64_t ids_hash = 0xcbf29ce484222325ULL;
};

Result BenchOurs(const moe::text::Tokenizer& tok, const std::vector<std::string>& docs,
                 size_t bytes) {
  Result result;
  double best = 1e30;
  for (int pass = 0; pass < absl::GetFlag(FLAGS_repeats); ++pass) {
    Result r;
    const auto start = std::chrono::steady_clock::now();
    for (const std::string& doc : docs) {
      auto ids = tok.Encode(doc, {.add_special_tokens = false});
      if (!ids.ok()) {
        std::fprintf(stderr, "encode failed: %s\n", ids.status().ToString().c_str());
        std::exit(1);
      }
      r.tokens += ids->size();
      r.ids_hash = Fnv1a(r.ids_hash, *ids);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (seconds < best) best = seconds, result = r;
  }
  result.mb_per_s = static_cast<double>(bytes) / 1e6 / best;
  return result;
}

// Runs the HF script; nullopt (with a message) if it could not.
std::optional<Result> BenchHf(const std::string& dir) {
  const std::string command = absl::StrFormat(
      "RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false '%s' '%s' --tokenizer '%s' --corpus '%s' "
      "--repeats %d",
      absl::GetFlag(FLAGS_python), absl::GetFlag(FLAGS_hf_script), dir, absl::GetFlag(FLAGS_corpus),
      absl::GetFlag(FLAGS_repeats));
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  if (pclose(pipe) != 0) {
    std::fprintf(stderr, "HF benchmark failed: %s\n", command.c_str());
    return std::nullopt;
  }
  const nlohmann::json j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return Result{j["mb_per_s"].get<double>(), j["tokens"].get<size_t>(),
                j["ids_hash"].get<uint64_t>()};
}

}  // namespace

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "Encode throughput of our tokenizer against HF tokenizers: tokenizer_bench");
  const std::vector<std::string> docs = MakeDocuments(absl::GetFlag(FLAGS_mb));
  size_t bytes = 0;
  {
    std::ofstream out(absl::GetFlag(FLAGS_corpus), std::ios::binary);
    for (size_t i = 0; i < docs.size(); ++i) {
      out << (i ? "\x1e" : "") << docs[i];
      bytes += docs[i].size();
    }
  }
  std::printf("corpus: %zu documents, %.1f MB of mixed text (%s)\n", docs.size(), bytes / 1e6,
              absl::GetFlag(FLAGS_corpus).c_str());
  std::printf("%-34s %10s %10s %8s %10s %s\n", "tokenizer", "ours MB/s", "HF MB/s", "ratio",
              "tokens", "ids");
  int status = 0;
  const std::vector<std::string> dirs = absl::StrSplit(absl::GetFlag(FLAGS_tokenizers), ',');
  for (const std::string& dir : dirs) {
    auto tok = moe::text::Tokenizer::FromDirectory(dir);
    if (!tok.ok()) {
      std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
      return 1;
    }
    const Result ours = BenchOurs(**tok, docs, bytes);
    const std::optional<Result> hf =
        absl::GetFlag(FLAGS_python).empty() ? std::nullopt : BenchHf(dir);
    const bool same = hf && hf->tokens == ours.tokens && hf->ids_hash == ours.ids_hash;
    if (hf && !same) status = 1;
    std::printf("%-34s %10.2f %10s %8s %10zu %s\n", dir.c_str(), ours.mb_per_s,
                hf ? absl::StrFormat("%.2f", hf->mb_per_s).c_str() : "-",
                hf ? absl::StrFormat("%.2fx", ours.mb_per_s / hf->mb_per_s).c_str() : "-",
                ours.tokens, hf ? (same ? "same as HF" : "DIFFERENT from HF") : "-");
  }
  return status;
}
