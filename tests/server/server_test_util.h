// Helpers for the server tests: a tiny random model with a real tokenizer, a blocking
// Generate client that collects a stream, the engine's own output for comparison, and HTTP
// GETs of the metrics port.
//
//   const std::string dir = MakeServerModel(ScratchDir("model"));
//   auto server = ServerProcess::Start({"--model", dir});
//   Streamed s = StreamGenerate(*stub, request);
//   EXPECT_EQ(s.tokens[0], EngineTokens(dir, engine_request));
//
//   class MyTest : public ServerModelTest {};  ... StartServer({"--api_key", key}); ...
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "moe/v1/generation.grpc.pb.h"
#include "runtime/engine/request.h"
#include "tests/server/server_process.h"

namespace moe::testing {

// A 2-layer Qwen3-MoE (8 experts, top-2, context 512) whose vocabulary is the qwen2 test
// tokenizer's (1554 ids), with that tokenizer and its chat template in `dir`.
std::string MakeServerModel(const std::string& dir);
inline constexpr int kServerModelVocab = 1554;
inline constexpr int kServerModelContext = 512;
inline constexpr int kServerModelExperts = 8;

// A test with MakeServerModel's model in a scratch directory (dir_), and a moe-server on it
// once StartServer has run (server_).
class ServerModelTest : public ::testing::Test {
 protected:
  void SetUp() override;
  // Starts moe-server with --model dir_ and `args`; fails the test if it does not serve.
  void StartServer(std::vector<std::string> args);

  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
};

struct Streamed {
  std::map<int, std::vector<int32_t>> tokens;  // by choice
  std::map<int, std::string> text;             // by choice
  std::map<int, v1::Final> finals;             // by choice
  int logprobs = 0;                            // TokenLogprobs entries, all choices
  std::string request_id;
  int chunks = 0;
  grpc::Status status;
};

struct StreamOptions {
  absl::Duration deadline = absl::InfiniteDuration();
  int cancel_after_chunks = -1;              // TryCancel once this many chunks came (-1: never)
  std::function<void(int chunks)> on_chunk;  // after each chunk
};

Streamed StreamGenerate(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                        const StreamOptions& options = {});

// What the engine makes for `request` on the model in `dir`, run directly (block size 16):
// the tokens of each choice.
std::map<int, std::vector<int32_t>> EngineTokens(const std::string& dir, const Request& request);

// Body of GET http://127.0.0.1:port/path; `status` gets the HTTP status (-1: no answer).
std::string HttpGet(int port, const std::string& path, int* status = nullptr);
// The value of an unlabelled or labelled sample line ("name{labels} value") in /metrics text.
double MetricValue(const std::string& metrics, const std::string& sample);

std::unique_ptr<v1::Generation::Stub> Connect(const std::string& address);

}  // namespace moe::testing
