// moe-server: serves an MoE model over gRPC (moe.v1.Generation, grpc.health.v1, reflection)
// and over HTTP: OpenAI's API (/v1/models, /v1/completions, /v1/chat/completions), /health
// and Prometheus /metrics. SIGTERM or SIGINT drains it: new requests get
// UNAVAILABLE, open streams finish (up to --drain_timeout, or until a second signal aborts
// them), then it exits 0. A second signal while the model loads exits at once.
//
//   moe-server --model /models/qwen3 --port 50051 --http_port 8000
//   moe-server --model /models/qwen3 --port 0 --http_port 0   # free ports, printed
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>

#include <unistd.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "runtime/status_macros.h"
#include "runtime/text/tokenizer_config.h"
#include "server/generation_service.h"
#include "server/http_server.h"
#include "server/tls_context.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/server_options.h"
#include "server/serving_model.h"
#include "server/signal_watcher.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json + safetensors)");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer directory (default: the model's, if it has one)");
ABSL_FLAG(std::string, host, "127.0.0.1", "address to listen on (0.0.0.0: every interface)");
ABSL_FLAG(int, port, 50051, "gRPC port (0: any free port)");
ABSL_FLAG(int, http_port, 8000,
          "HTTP port of the OpenAI API, /health and /metrics (0: any free port; -1: none)");
ABSL_FLAG(int, metrics_port, -1,
          "a second HTTP port with only /metrics and /health, for operators (0: any free; -1: none)");
ABSL_FLAG(int, http_threads, 2, "I/O threads serving every HTTP connection");
ABSL_FLAG(std::string, served_model_name, "",
          "the model's name in the OpenAI API (default: the model directory's base name)");
ABSL_FLAG(std::string, api_key, "",
          "if set (or MOE_API_KEY), /v1 needs Authorization: Bearer <key>; /health and /metrics stay open");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: gRPC and HTTP serve TLS only (with --tls_key); default: plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: every client must present a certificate one of them signed (mutual TLS)");
ABSL_FLAG(std::string, backend, "auto", "auto (the GPU when there is one), cpu or cuda");
ABSL_FLAG(std::string, cpu_gemm_inputs, "bf16",
          "CPU backend: what bf16 weights multiply, bf16 (activations rounded, as PyTorch and llama.cpp run bf16 models) or f32 (the reference)");
ABSL_FLAG(int, max_batched_tokens, 2048, "token budget of one engine step");
ABSL_FLAG(int, max_seqs, 256, "sequences running at once");
ABSL_FLAG(std::string, kv_cache_memory, "1GiB", "KV cache size (B, KiB, MiB, GiB)");
ABSL_FLAG(int, kv_blocks, 0, "KV cache blocks; overrides --kv_cache_memory when > 0");
ABSL_FLAG(int, block_size, 16, "KV cache block size in tokens (a power of two)");
ABSL_FLAG(int, queue_limit, 1024, "requests waiting at most; beyond, RESOURCE_EXHAUSTED (0: none)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "on SIGTERM, how long open streams may run before they are aborted");
ABSL_FLAG(int, max_message_bytes, 4 << 20, "largest gRPC message received or sent, and HTTP request body");
ABSL_FLAG(std::string, stream_buffer_limit, "16MiB",
          "a stream (gRPC or HTTP) whose client reads too slowly ends once this much waits unsent");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(absl::Duration, collective_timeout, absl::Seconds(60),
          "under mpirun: a step's exchange still waiting on a rank after this long ends every rank");

namespace moe::server {
namespace {

// "512MiB", "2GiB", "1000000".
absl::StatusOr<int64_t> ParseBytes(const std::string& text, const char* flag) {
  const std::pair<const char*, int64_t> units[] = {
      {"GiB", int64_t{1} << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}};
  for (const auto& [suffix, scale] : units) {
    if (!absl::EndsWith(text, suffix)) continue;
    int64_t n;
    if (absl::SimpleAtoi(text.substr(0, text.size() - strlen(suffix)), &n) && n > 0)
      return n * scale;
    break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(flag, " must be a positive size such as 512MiB, got \"", text, "\""));
}

// The --tls_* files' contents; none given: TLS off.
absl::StatusOr<TlsOptions> TlsFromFlags() {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key),
                    client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() != key.empty()) return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  if (cert.empty() && !client_ca.empty()) return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert");
  auto read = [](const char* flag, const std::string& path) -> absl::StatusOr<std::string> {
    if (path.empty()) return std::string();
    absl::StatusOr<std::string> pem = text::ReadTextFile(path);
    if (!pem.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", pem.status().message()));
    if (!absl::StrContains(*pem, "-----BEGIN ")) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": ", path, " holds no PEM block"));
    }
    return pem;
  };
  TlsOptions tls;
  ASSIGN_OR_RETURN(tls.certificate_chain, read("--tls_cert", cert));
  ASSIGN_OR_RETURN(tls.private_key, read("--tls_key", key));
  ASSIGN_OR_RETURN(tls.client_ca, read("--tls_client_ca", client_ca));
  if (!tls.enabled()) return tls;
  if (absl::Status checked = CheckTls(tls); !checked.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_cert, --tls_key, --tls_client_ca: ", checked.message()));
  }
  return tls;
}

absl::StatusOr<ServerOptions> OptionsFromFlags() {
  ServerOptions o;
  o.model.model_dir = absl::GetFlag(FLAGS_model);
  if (o.model.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  o.model.tokenizer_dir = absl::GetFlag(FLAGS_tokenizer);
  o.model.backend = absl::GetFlag(FLAGS_backend);
  RETURN_IF_ERROR(ResolveBackend(o.model.backend).status());
  ASSIGN_OR_RETURN(o.model.gemm_inputs, ParseGemmInputs(absl::GetFlag(FLAGS_cpu_gemm_inputs)));
  o.host = absl::GetFlag(FLAGS_host);
  o.port = absl::GetFlag(FLAGS_port);
  o.http_port = absl::GetFlag(FLAGS_http_port);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (o.port < 0 || o.port > 65535)
    return absl::InvalidArgumentError("--port must be in [0, 65535]");
  if (o.http_port < -1 || o.http_port > 65535) {
    return absl::InvalidArgumentError("--http_port must be in [-1, 65535]");
  }
  if (o.metrics_port < -1 || o.metrics_port > 65535) {
    return absl::InvalidArgumentError("--metrics_port must be in [-1, 65535]");
  }
  o.http_threads = absl::GetFlag(FLAGS_http_threads);
  if (o.http_threads < 1 || o.http_threads > 64) {
    return absl::InvalidArgumentError("--http_threads must be in [1, 64]");
  }
  o.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (o.served_model_name.empty()) {
    std::string dir = o.model.model_dir;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    o.served_model_name = dir.substr(dir.find_last_of('/') + 1);
  }
  o.api_key = absl::GetFlag(FLAGS_api_key);
  if (const char* env = std::getenv("MOE_API_KEY"); o.api_key.empty() && env != nullptr) o.api_key = env;
  ASSIGN_OR_RETURN(o.tls, TlsFromFlags());
  EngineOptions& e = o.model.engine;
  e.scheduler.max_num_batched_tokens = absl::GetFlag(FLAGS_max_batched_tokens);
  e.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_seqs);
  e.block_size = absl::GetFlag(FLAGS_block_size);
  e.num_kv_blocks = absl::GetFlag(FLAGS_kv_blocks);
  if (e.num_kv_blocks <= 0) {
    ASSIGN_OR_RETURN(e.kv_cache_bytes, ParseBytes(absl::GetFlag(FLAGS_kv_cache_memory), "--kv_cache_memory"));
  }
  e.max_waiting_requests = absl::GetFlag(FLAGS_queue_limit);
  if (e.max_waiting_requests < 0) return absl::InvalidArgumentError("--queue_limit must be >= 0");
  o.drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  if (o.max_message_bytes < 1024)
    return absl::InvalidArgumentError("--max_message_bytes must be >= 1024");
  ASSIGN_OR_RETURN(o.max_stream_buffer_bytes, ParseBytes(absl::GetFlag(FLAGS_stream_buffer_limit), "--stream_buffer_limit"));
  return o;
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartGrpc(const ServerOptions& o,
                                                        GenerationService& service, int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (o.tls.enabled()) {
    grpc::SslServerCredentialsOptions ssl(o.tls.client_ca.empty()
                                              ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = o.tls.client_ca;
    ssl.pem_key_cert_pairs.push_back({.private_key = o.tls.private_key, .cert_chain = o.tls.certificate_chain});
    credentials = grpc::SslServerCredentials(ssl);
  }
  builder.AddListeningPort(absl::StrCat(o.host, ":", o.port), credentials, port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(o.max_message_bytes);
  builder.SetMaxSendMessageSize(o.max_message_bytes);
  // Long streams: ping idle connections to find dead peers, and let clients ping as often
  // as every 10 s without being told to go away.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             absl::ToInt64Milliseconds(o.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             absl::ToInt64Milliseconds(o.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen for gRPC on ", o.host, ":", o.port,
                                               o.tls.enabled() ? " (or --tls_cert and --tls_key are not a pair)" : ""));
  }
  service.SetHealth(server->GetHealthCheckService());
  return server;
}

// How long gRPC's Shutdown lets calls still in flight (short unary ones, once the streams
// are drained) run before cancelling them. It waits that long whenever a client keeps its
// connection open, so it is kept short.
constexpr absl::Duration kShutdownGrace = absl::Milliseconds(500);

// How long HTTP answers already made (a drained stream's last events, queued for a client
// that reads slowly) may take to reach their clients at exit.
constexpr absl::Duration kHttpFlushGrace = absl::Seconds(5);

// After SIGTERM: no new requests, open streams run until done, until the drain timeout or
// until a second signal, when whatever is left is aborted (each stream still gets its Final).
void Drain(const ServerOptions& o, const SignalWatcher& signals, GenerationService& service,
           OpenAiApi& http, ServingModel& serving) {
  service.StartDraining();
  auto open = [&] { return service.active_streams() + http.active_requests(); };
  Log(LogLevel::kInfo,
      absl::StrCat("draining ", service.active_streams(), " gRPC streams and ", http.active_requests(),
                   " HTTP requests (timeout ", absl::FormatDuration(o.drain_timeout),
                   "; signal again to abort them now)"));
  const absl::Time deadline = absl::Now() + o.drain_timeout;
  auto wait = [&](absl::Duration timeout) {
    return service.WaitForStreams(timeout) && http.WaitForRequests(absl::ZeroDuration());
  };
  bool drained = wait(absl::ZeroDuration());
  while (!drained && absl::Now() < deadline && signals.count() < 2) {
    drained = wait(std::min(absl::Milliseconds(50), deadline - absl::Now()));
  }
  if (!drained) {
    Log(LogLevel::kWarning, absl::StrCat(signals.count() >= 2 ? "second signal" : "drain timeout",
                                         ": aborting ", open(), " streams and requests"));
    serving.Stop();
    service.WaitForStreams(absl::Seconds(5));
    http.WaitForRequests(absl::Seconds(5));
  }
}

// Ranks other than 0 of an mpirun group: load this rank's experts, then step with rank 0
// (which alone serves gRPC and metrics) until it stops the group. Signals stay blocked here:
// rank 0 drains and then stops everyone.
absl::Status RunMember(dist::Communicator& comm) {
  ASSIGN_OR_RETURN(ServerOptions options, OptionsFromFlags());
  options.model.comm = &comm;
  ASSIGN_OR_RETURN(std::unique_ptr<ServingModel> serving, ServingModel::Load(options.model));
  Log(LogLevel::kInfo, absl::StrCat("rank ", comm.Rank(), " of ", comm.Size(), " (pid ", getpid(),
                                    "): loaded, stepping with rank 0"));
  RETURN_IF_ERROR(serving->RunGroupMember());
  Log(LogLevel::kInfo, absl::StrCat("rank ", comm.Rank(), ": the group stopped"));
  return absl::OkStatus();
}

// Whether `host` names this machine alone: a client elsewhere cannot reach it.
bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || absl::StartsWith(host, "127.");
}

absl::Status Run(SignalWatcher& signals, dist::Communicator& comm) {
  ASSIGN_OR_RETURN(ServerOptions options, OptionsFromFlags());
  if (!IsLoopback(options.host) && options.api_key.empty()) {
    Log(LogLevel::kWarning, absl::StrCat("listening on ", options.host,
                                         " without an API key: anyone who reaches this machine can use it "
                                         "(--api_key or MOE_API_KEY)"));
  }
  options.model.comm = &comm;
  Metrics metrics;
  GenerationService service(options, metrics);
  int port = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<grpc::Server> grpc_server, StartGrpc(options, service, &port));
  OpenAiApi api({.model_name = options.served_model_name, .api_key = options.api_key}, service, metrics,
                [&] {
                  ServingModel* s = service.serving();
                  return metrics.Render(s ? s->engine().GetStats() : EngineStats{},
                                        s ? s->model().RoutedTokensPerExpert() : std::vector<int64_t>{},
                                        service.active_streams() + api.active_requests());
                });
  auto start_http = [&](int http_port, HttpHandler handler) -> absl::StatusOr<std::unique_ptr<HttpServer>> {
    if (http_port < 0) return nullptr;
    return HttpServer::Start({.host = options.host,
                              .port = http_port,
                              .io_threads = options.http_threads,
                              .max_body_bytes = static_cast<size_t>(options.max_message_bytes),
                              .max_pending_bytes = static_cast<size_t>(options.max_stream_buffer_bytes),
                              .tls = options.tls},
                             std::move(handler));
  };
  ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> http,
                   start_http(options.http_port, [&api](std::shared_ptr<HttpExchange> x) { api.Handle(std::move(x)); }));
  // The operator's port: /health and /metrics only.
  ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> operator_http,
                   start_http(options.metrics_port, [&api](std::shared_ptr<HttpExchange> x) {
                     const std::string& path = x->request().path;
                     if (path == "/health" || path == "/metrics") {
                       api.Handle(std::move(x));
                     } else {
                       x->Reply(404, "text/plain", "this port serves only /health and /metrics\n");
                     }
                   }));
  auto address = [&](const std::unique_ptr<HttpServer>& server) {
    return server ? absl::StrCat(options.host, ":", server->port()) : std::string("none");
  };
  std::printf("moe-server: listening on %s:%d (gRPC), metrics on %s, HTTP on %s; loading %s\n",
              options.host.c_str(), port, address(operator_http ? operator_http : http).c_str(),
              address(http).c_str(), options.model.model_dir.c_str());
  std::fflush(stdout);

  const absl::Time load_start = absl::Now();
  signals.SetExitOnSecondSignal("loading the model");  // nothing is accepted yet
  absl::StatusOr<std::unique_ptr<ServingModel>> serving = ServingModel::Load(options.model);
  signals.SetExitOnSecondSignal("");
  if (!serving.ok()) {
    grpc_server->Shutdown(absl::ToChronoTime(absl::Now() + kShutdownGrace));
    return serving.status();
  }
  if (signals.received()) {  // told to stop while loading: never start serving
    Log(LogLevel::kInfo, "stop signal during loading; exiting without serving");
    grpc_server->Shutdown(absl::ToChronoTime(absl::Now() + kShutdownGrace));
    if (http) http->Stop();
    if (operator_http) operator_http->Stop();
    (*serving)->Stop();
    return absl::OkStatus();
  }
  service.StartServing(serving->get());
  if (comm.Size() > 1) {
    // A rank died or hangs: the group is about to end. Say so before it does.
    comm.AddAbortHandler([&service, engine = &(*serving)->engine()](const std::string& reason) {
      service.StartDraining();  // health: NOT_SERVING, new requests UNAVAILABLE
      engine->FailEverything(absl::UnavailableError(absl::StrCat("the expert-parallel group is ending: ", reason)));
      service.WaitForStreams(absl::Seconds(2));  // let the streams send their status
    });
  }
  const std::string ranks = comm.Size() > 1 ? absl::StrCat(", experts over ", comm.Size(), " ranks") : "";
  std::printf("moe-server: serving %s (%s backend, %d KV blocks of %d%s) on %s:%d, loaded in %s\n",
              (*serving)->model().info().architecture.c_str(), (*serving)->backend().c_str(),
              (*serving)->num_kv_blocks(), (*serving)->block_size(), ranks.c_str(), options.host.c_str(),
              port, absl::FormatDuration(absl::Now() - load_start).c_str());
  std::fflush(stdout);

  const int sig = signals.Wait();
  Log(LogLevel::kInfo, absl::StrCat("got ", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
  Drain(options, signals, service, api, **serving);
  grpc_server->Shutdown(absl::ToChronoTime(absl::Now() + kShutdownGrace));
  if (http) http->Stop(kHttpFlushGrace);
  if (operator_http) operator_http->Stop(kHttpFlushGrace);
  (*serving)->Stop();
  Log(LogLevel::kInfo, "stopped");
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe::server

int main(int argc, char** argv) {
  moe::server::SignalWatcher signals;  // first: every later thread inherits the blocked signals
  moe::ParseCommandLine(argc, argv, "Serves an MoE model over gRPC: moe-server --model DIR [--port N]");
  absl::StatusOr<moe::server::LogLevel> level =
      moe::server::ParseLogLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) {
    std::cerr << "moe-server: " << level.status().message() << "\n";
    return 1;
  }
  moe::server::SetLogLevel(*level);
  absl::StatusOr<std::unique_ptr<moe::dist::Communicator>> comm =
      moe::dist::MakeCommunicator({.timeout = absl::GetFlag(FLAGS_collective_timeout)});
  if (!comm.ok()) {
    std::cerr << "moe-server: " << comm.status().message() << "\n";
    return 1;
  }
  const absl::Status status =
      (*comm)->Rank() == 0 ? moe::server::Run(signals, **comm) : moe::server::RunMember(**comm);
  if (!status.ok()) {
    std::cerr << "moe-server (rank " << (*comm)->Rank() << "): " << status.message() << "\n";
    // Every other rank waits for this one at each step: end the group, naming why.
    if ((*comm)->Size() > 1) (*comm)->Abort(absl::StrCat("moe-server: ", status.message()));
    return 1;
  }
  return 0;
}
