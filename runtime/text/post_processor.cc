// Post-processor parsing (see post_processor.h).
#include "runtime/text/post_processor.h"

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/text/token_id.h"

namespace moe::text {
namespace {

using json = nlohmann::json;

absl::StatusOr<PostProcessor> FromTemplate(const json& spec) {
  PostProcessor out;
  bool seen_sequence = false;
  for (const json& piece : spec.at("single")) {
    if (piece.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    const std::string name = piece.at("SpecialToken").at("id").get<std::string>();
    if (!spec.at("special_tokens").contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("template special token '", name, "' missing from special_tokens"));
    }
    auto ids = spec["special_tokens"][name].at("ids").get<std::vector<int32_t>>();
    auto& side = seen_sequence ? out.after : out.before;
    side.insert(side.end(), ids.begin(), ids.end());
  }
  return out;
}

absl::StatusOr<PostProcessor> MakeUnchecked(const json& spec) {
  const std::string type = spec.at("type").get<std::string>();
  if (type == "ByteLevel") return PostProcessor{};
  if (type == "TemplateProcessing") return FromTemplate(spec);
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    ASSIGN_OR_RETURN(const int32_t cls, TokenIdOf(spec.at("cls").at(1), "the post-processor's cls id"));
    ASSIGN_OR_RETURN(const int32_t sep, TokenIdOf(spec.at("sep").at(1), "the post-processor's sep id"));
    return PostProcessor{{cls}, {sep}};
  }
  if (type == "Sequence") {
    PostProcessor out;
    for (const json& step : spec.at("processors")) {
      ASSIGN_OR_RETURN(PostProcessor p, MakePostProcessor(step));
      out.before.insert(out.before.end(), p.before.begin(), p.before.end());
      out.after.insert(out.after.end(), p.after.begin(), p.after.end());
    }
    return out;
  }
  return absl::UnimplementedError(
      absl::StrCat("unsupported post_processor type '", type,
                   "' (supported: TemplateProcessing, ByteLevel, BertProcessing, "
                   "RobertaProcessing, Sequence)"));
}

}  // namespace

absl::StatusOr<PostProcessor> MakePostProcessor(const json& spec) {
  if (spec.is_null()) return PostProcessor{};
  try {
    return MakeUnchecked(spec);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad post_processor in tokenizer.json: ", e.what(), " in ", spec.dump()));
  }
}

}  // namespace moe::text
