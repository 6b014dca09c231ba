// ParseBatchLine: one line of moe-batch's input, in either of its forms, turned into the
// OpenAI request it asks for. OpenAI's Batch format,
//
//   {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
//
// or the plain form {"id": "q1", "prompt" | "messages": ..., sampling fields...}. A request
// without a seed gets one derived from its custom_id (BatchSeed), so a rerun gives the same
// tokens; a request without a model gets the run's.
//
//   std::string custom_id;  // set as soon as it is known, so an error line can name it
//   ASSIGN_OR_RETURN(BatchLine line, ParseBatchLine(text, model_name, serving, &custom_id));
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/openai_request.h"
#include "server/serving_model.h"

namespace moe::batch {

// FNV-1a: a custom_id's seed and line id, the same on every machine and every run.
uint64_t Fnv1a(const std::string& s);

struct BatchLine {
  std::string custom_id;
  server::Endpoint endpoint = server::Endpoint::kCompletions;
  server::OpenAiRequest request;
  uint64_t seed = 0;  // the request's, or the one derived from custom_id
};

// InvalidArgument naming the field (as server::BadField does), NotFound for another model.
absl::StatusOr<BatchLine> ParseBatchLine(const std::string& text, const std::string& model_name,
                                         const server::ServingModel& serving, std::string* custom_id);

}  // namespace moe::batch
