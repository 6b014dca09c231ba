// ServerOptions: how moe-server was asked to run (its flags, checked), shared by the parts
// that report them (GetServerInfo) or act on them (ports, limits, drain).
//
//   ASSIGN_OR_RETURN(ServerOptions options, ServerOptionsFromFlags());
#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "server/serving_model.h"
#include "server/tls_options.h"

namespace moe::server {

inline constexpr char kServerVersion[] = "moe-server 0.1";

struct ServerOptions {
  ServingModelOptions model;
  std::string host = "127.0.0.1";
  int port = 50051;         // 0: any free port (printed when listening)
  int http_port = 8000;     // the OpenAI API, /health, /metrics; 0: any free port; -1: none
  int metrics_port = -1;    // only /health and /metrics; 0: any free port; -1: none
  int http_threads = 2;     // I/O threads of each HTTP port
  std::string served_model_name;  // the model's name in the OpenAI API
  std::string api_key;            // empty: neither /v1 nor gRPC needs a key
  TlsOptions tls;                 // gRPC and HTTP alike
  absl::Duration drain_timeout = absl::Seconds(30);
  int max_message_bytes = 4 << 20;  // received and sent gRPC messages; HTTP request bodies
  // A stream (gRPC or HTTP) whose client reads slower than it is written is ended, and its
  // request aborted, once this much waits unsent.
  int64_t max_stream_buffer_bytes = 16 << 20;
  absl::Duration keepalive_time = absl::Seconds(60);
  absl::Duration keepalive_timeout = absl::Seconds(20);
};

}  // namespace moe::server
