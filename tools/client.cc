// moe-client: one request to a running moe-server over its OpenAI HTTP API, from the command
// line, with no stubs to generate and no grpcurl. Prints the answer (as it arrives with
// --stream); errors print the server's message and exit 1.
//
//   moe-client "What is 12+30?"                       # a completion of the text
//   moe-client --chat --stream "What is 12+30?"       # a chat turn, streamed
//   moe-client --url http://10.0.0.5:8000 --temperature 0.7 --seed 1 --max_tokens 64 "Hi"
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "runtime/command_line.h"

ABSL_FLAG(std::string, url, "http://127.0.0.1:8000", "the server's HTTP address");
ABSL_FLAG(std::string, model, "", "model name (default: the one the server lists)");
ABSL_FLAG(bool, chat, false, "send the text as a user message, rendered with the chat template");
ABSL_FLAG(std::string, system, "", "with --chat: a system message first");
ABSL_FLAG(bool, stream, false, "print the answer as it is generated");
ABSL_FLAG(int, max_tokens, 128, "new tokens at most");
ABSL_FLAG(double, temperature, 0.0, "sampling temperature (0: greedy, the default here)");
ABSL_FLAG(double, top_p, 1.0, "nucleus sampling mass");
ABSL_FLAG(int, top_k, 0, "sample among the k most likely tokens (0: all)");
ABSL_FLAG(int64_t, seed, -1, "sampling seed (-1: none)");
ABSL_FLAG(bool, usage, false, "print the token counts and the confidence after the answer");
ABSL_FLAG(std::string, api_key, "", "bearer key (default: $MOE_API_KEY)");

namespace {

using json = nlohmann::json;

int Fail(const std::string& message) {
  std::fprintf(stderr, "moe-client: %s\n", message.c_str());
  return 1;
}

// The server's error message, or the body itself when it is not OpenAI's error shape.
std::string ErrorOf(int status, const std::string& body) {
  const json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    return absl::StrCat("HTTP ", status, ": ", j["error"].value("message", body));
  }
  return absl::StrCat("HTTP ", status, ": ", body);
}

std::string ChoiceText(const json& choice, bool chat) {
  if (!chat) return choice.value("text", "");
  const json& holder = choice.contains("delta") ? choice["delta"] : choice["message"];
  return holder.contains("content") && holder["content"].is_string() ? holder["content"].get<std::string>() : "";
}

void PrintUsage(const json& usage, const json& confidence) {
  if (!absl::GetFlag(FLAGS_usage)) return;
  if (usage.is_object()) {
    std::fprintf(stderr, "[%d prompt + %d completion tokens]", usage.value("prompt_tokens", 0),
                 usage.value("completion_tokens", 0));
  }
  if (confidence.is_object()) {
    std::fprintf(stderr, " [confidence: mean logprob %.3f, min %.3f]", confidence.value("mean_logprob", 0.0),
                 confidence.value("min_logprob", 0.0));
  }
  std::fprintf(stderr, "\n");
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<char*> args =
      moe::ParseCommandLine(argc, argv, "One request to moe-server's OpenAI API: moe-client [--chat] [--stream] TEXT");
  if (args.size() < 2) return Fail("give the text to send, e.g. moe-client \"What is 12+30?\"");
  const std::string text = absl::StrJoin(args.begin() + 1, args.end(), " ");
  std::string key = absl::GetFlag(FLAGS_api_key);
  if (const char* env = std::getenv("MOE_API_KEY"); key.empty() && env != nullptr) key = env;

  httplib::Client client(absl::GetFlag(FLAGS_url));
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(600, 0);
  httplib::Headers headers;
  if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);

  std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    const httplib::Result models = client.Get("/v1/models", headers);
    if (!models) return Fail(absl::StrCat("cannot reach ", absl::GetFlag(FLAGS_url), ": ", httplib::to_string(models.error())));
    if (models->status != 200) return Fail(ErrorOf(models->status, models->body));
    const json list = json::parse(models->body, nullptr, false);
    if (list.is_discarded() || list["data"].empty()) return Fail("the server lists no model");
    model = list["data"][0]["id"];
  }

  const bool chat = absl::GetFlag(FLAGS_chat), stream = absl::GetFlag(FLAGS_stream);
  json body = {{"model", model},
               {"max_tokens", absl::GetFlag(FLAGS_max_tokens)},
               {"temperature", absl::GetFlag(FLAGS_temperature)},
               {"top_p", absl::GetFlag(FLAGS_top_p)},
               {"stream", stream}};
  if (absl::GetFlag(FLAGS_top_k) > 0) body["top_k"] = absl::GetFlag(FLAGS_top_k);
  if (absl::GetFlag(FLAGS_seed) >= 0) body["seed"] = absl::GetFlag(FLAGS_seed);
  if (stream) body["stream_options"] = {{"include_usage", true}};
  if (chat) {
    body["messages"] = json::array();
    if (!absl::GetFlag(FLAGS_system).empty()) {
      body["messages"].push_back({{"role", "system"}, {"content", absl::GetFlag(FLAGS_system)}});
    }
    body["messages"].push_back({{"role", "user"}, {"content", text}});
  } else {
    body["prompt"] = text;
  }

  httplib::Request req;
  req.method = "POST";
  req.path = chat ? "/v1/chat/completions" : "/v1/completions";
  req.headers = headers;
  req.set_header("Content-Type", "application/json");
  req.body = body.dump();
  std::string received, pending;
  json usage, confidence;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (!stream) {
      received.append(data, n);
      return true;
    }
    pending.append(data, n);
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos; pending.erase(0, end + 2)) {
      const std::string event = pending.substr(0, end);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") continue;
      const json chunk = json::parse(payload, nullptr, false);
      if (chunk.is_discarded()) continue;
      if (chunk.contains("error")) {
        received = payload;  // reported after the stream
        continue;
      }
      if (chunk.contains("usage") && !chunk["usage"].is_null()) usage = chunk["usage"];
      for (const json& choice : chunk["choices"]) {
        std::fputs(ChoiceText(choice, chat).c_str(), stdout);
        if (choice.contains("confidence")) confidence = choice["confidence"];
      }
      std::fflush(stdout);
    }
    return true;
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  if (!client.send(req, res, error)) {
    return Fail(absl::StrCat("cannot reach ", absl::GetFlag(FLAGS_url), ": ", httplib::to_string(error)));
  }
  if (res.status != 200) return Fail(ErrorOf(res.status, received));
  if (stream) {
    std::printf("\n");
    if (!received.empty()) return Fail(ErrorOf(500, received));
    PrintUsage(usage, confidence);
    return 0;
  }
  const json answer = json::parse(received, nullptr, false);
  if (answer.is_discarded()) return Fail("the server's answer is not JSON");
  std::printf("%s\n", ChoiceText(answer["choices"][0], chat).c_str());
  PrintUsage(answer["usage"], answer["choices"][0]["confidence"]);
  return 0;
}
