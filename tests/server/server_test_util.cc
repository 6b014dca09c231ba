// Server test helpers (see server_test_util.h).
#include "tests/server/server_test_util.h"

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "moe/moe_model.h"
#include "runtime/engine/engine.h"
#include "tests/test_util.h"
#include "tools/random_model.h"

namespace moe::testing {

std::string MakeServerModel(const std::string& dir) {
  nlohmann::json config = TinyQwen3Config();
  config["vocab_size"] = kServerModelVocab;
  config["max_position_embeddings"] = kServerModelContext;
  config["eos_token_id"] = 2;  // <|im_end|>
  const absl::Status written =
      WriteRandomModel(config, {.dtype = DType::kF32, .seed = 11, .init_std = 0.2f}, dir).status();
  EXPECT_TRUE(written.ok()) << written;
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(DataDir() + "/tokenizers/qwen2/" + file, dir + "/" + file,
                               std::filesystem::copy_options::overwrite_existing);
  }
  return dir;
}

void ServerModelTest::SetUp() { dir_ = MakeServerModel(ScratchDir("model")); }

void ServerModelTest::StartServer(std::vector<std::string> args) {
  args.insert(args.begin(), {"--model", dir_});
  auto server = ServerProcess::Start(args);
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
}

Streamed StreamGenerate(v1::Generation::Stub& stub, const v1::GenerateRequest& request,
                        const StreamOptions& options) {
  grpc::ClientContext context;
  if (options.deadline != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + options.deadline));
  }
  Streamed out;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    out.request_id = response.request_id();
    if (response.has_final()) {
      out.finals[response.choice()] = response.final();
      continue;
    }
    ++out.chunks;
    auto& tokens = out.tokens[response.choice()];
    tokens.insert(tokens.end(), response.chunk().token_ids().begin(),
                  response.chunk().token_ids().end());
    out.text[response.choice()] += response.chunk().text();
    out.logprobs += response.chunk().logprobs_size();
    if (options.on_chunk) options.on_chunk(out.chunks);
    if (out.chunks == options.cancel_after_chunks) context.TryCancel();
  }
  out.status = reader->Finish();
  return out;
}

std::map<int, std::vector<int32_t>> EngineTokens(const std::string& dir, const Request& request) {
  auto model = MoeModel::Load(dir);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  auto engine = Engine::Create(**model, {.num_kv_blocks = 128, .block_size = 16});
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (!engine.ok()) return {};
  struct Sink : OutputSink {
    void OnDelta(const OutputDelta& d) override {
      tokens[d.choice].insert(tokens[d.choice].end(), d.token_ids.begin(), d.token_ids.end());
    }
    void OnFinal(const FinalOutput&) override {}
    std::map<int, std::vector<int32_t>> tokens;
  };
  auto sink = std::make_shared<Sink>();
  const absl::Status submitted = (*engine)->Submit(request, sink);
  EXPECT_TRUE(submitted.ok()) << submitted;
  EXPECT_TRUE((*engine)->RunUntilIdle().ok());
  return sink->tokens;
}

std::string HttpGet(int port, const std::string& path, int* status) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5);
  httplib::Result result = client.Get(path.c_str());
  if (status != nullptr) *status = result ? result->status : -1;
  return result ? result->body : "";
}

double MetricValue(const std::string& metrics, const std::string& sample) {
  const std::string prefix = sample + " ";
  size_t at = metrics.rfind("\n" + prefix);
  if (at == std::string::npos) return -1;
  at += 1 + prefix.size();
  double value = -1;
  EXPECT_TRUE(absl::SimpleAtod(metrics.substr(at, metrics.find('\n', at) - at), &value)) << sample;
  return value;
}

std::unique_ptr<v1::Generation::Stub> Connect(const std::string& address) {
  return v1::Generation::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

}  // namespace moe::testing
