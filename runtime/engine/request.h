// Request: what a client asks the engine for: a prompt of token ids, how to sample, when
// to stop, and scheduling hints. Front ends validate and fill it; Engine::Submit takes it.
//
//   Request r{.id = "req-1", .prompt = {1, 2, 3}};
//   r.sampling.temperature = 0.7f;  r.sampling.seed = 42;
//   r.stopping.max_tokens = 64;     r.stopping.stop_strings = {"\n\n"};
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace moe {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy
  int top_k = 0;                    // 0 = all tokens
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]: drop tokens below min_p * p(max)
  float repetition_penalty = 1.0f;  // > 0; over prompt and output tokens
  float presence_penalty = 0.0f;    // over output tokens
  float frequency_penalty = 0.0f;   // over output tokens
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token, added logit)
  std::optional<uint64_t> seed;     // unseeded requests get a random one
  int logprobs = -1;                // -1: none; 0: the chosen token's; n: plus top-n
  int n = 1;                        // independent choices sharing the prompt

  bool greedy() const { return temperature == 0.0f; }
};

struct StoppingParams {
  int max_tokens = 16;  // new tokens per choice
  int min_tokens = 0;   // EOS and stop tokens are masked until this many
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop_strings;  // matched on detokenized text, never streamed
  bool include_stop_string = false;
  bool ignore_eos = false;
  absl::Duration time_limit = absl::InfiniteDuration();  // from arrival
};

struct Request {
  std::string id;
  std::vector<int32_t> prompt;  // token ids
  SamplingParams sampling;
  StoppingParams stopping;
  int priority = 0;        // lower is served first; FCFS within a priority
  std::string cache_salt;  // separates prefix-cache entries between tenants
  bool skip_special_tokens = true;  // in the streamed text
};

}  // namespace moe
