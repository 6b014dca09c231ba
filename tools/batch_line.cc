// ParseBatchLine (see batch_line.h).
#include "tools/batch_line.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/status_macros.h"

namespace moe::batch {

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

absl::StatusOr<BatchLine> ParseBatchLine(const std::string& text, const std::string& model_name,
                                         const server::ServingModel& serving, std::string* custom_id) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError("the line is not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("the line must be a JSON object");
  nlohmann::json body;
  std::string url;
  if (j.contains("custom_id") || j.contains("body")) {  // OpenAI's Batch format
    if (!j.contains("custom_id") || !j["custom_id"].is_string() || j["custom_id"].get<std::string>().empty()) {
      return server::BadField("custom_id", "must be a non-empty string");
    }
    *custom_id = j["custom_id"];
    if (j.contains("method") && j["method"] != "POST") return server::BadField("method", "must be \"POST\"");
    url = j.contains("url") && j["url"].is_string() ? j["url"].get<std::string>() : "";
    if (!j.contains("body") || !j["body"].is_object()) return server::BadField("body", "must be an object");
    body = j["body"];
  } else {  // the plain form
    if (!j.contains("id") || !j["id"].is_string() || j["id"].get<std::string>().empty()) {
      return server::BadField("id", "must be a non-empty string (or use custom_id, url and body)");
    }
    *custom_id = j["id"];
    body = j;
    body.erase("id");
    url = body.contains("messages") ? "/v1/chat/completions" : "/v1/completions";
  }
  if (url != "/v1/chat/completions" && url != "/v1/completions") {
    return server::BadField("url", absl::StrCat("must be /v1/chat/completions or /v1/completions, got \"", url, "\""));
  }
  if (!body.contains("model")) body["model"] = model_name;
  if (body.contains("stream") && body["stream"] == true) {
    return server::BadField("stream", "is not available in a batch");
  }
  const bool seeded = body.contains("seed") && !body["seed"].is_null();
  if (!seeded) body["seed"] = Fnv1a(*custom_id) >> 1;  // fits in int64, as OpenAI's seed
  BatchLine out{.custom_id = *custom_id,
                .endpoint = url == "/v1/chat/completions" ? server::Endpoint::kChat : server::Endpoint::kCompletions};
  ASSIGN_OR_RETURN(out.request, server::ParseOpenAiBody(out.endpoint, body, serving));
  if (out.request.model != model_name) {
    return absl::NotFoundError(
        absl::StrCat("the model \"", out.request.model, "\" is not this run's (\"", model_name, "\")"));
  }
  out.seed = *out.request.prompts[0].sampling.seed;
  return out;
}

}  // namespace moe::batch
