// PostProcessor: the special-token ids that tokenizer.json's post_processor puts around one
// encoded sequence (TemplateProcessing's "single" template, BertProcessing, RobertaProcessing,
// ByteLevel (adds nothing) and Sequence of these). Pair templates are not used for serving.
//
//   ASSIGN_OR_RETURN(PostProcessor post, MakePostProcessor(json["post_processor"]));
//   ids.insert(ids.begin(), post.before.begin(), post.before.end());   // e.g. [<s>]
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace moe::text {

struct PostProcessor {
  std::vector<int32_t> before;  // ids put before the sequence
  std::vector<int32_t> after;   // ids put after it
};

// An empty PostProcessor for a JSON null.
absl::StatusOr<PostProcessor> MakePostProcessor(const nlohmann::json& spec);

}  // namespace moe::text
