// GenerationService: moe.v1.Generation on gRPC's callback API. Handlers only validate and
// enqueue; the engine thread does the work and GenerateCall streams it back.
//
// With an API key (ServerOptions::api_key, the same as HTTP's), every call needs the
// metadata `authorization: Bearer <key>`, else UNAUTHENTICATED; grpc.health.v1 stays open.
//
// The service moves through LOADING (every call but GetServerInfo gets UNAVAILABLE), SERVING
// and DRAINING (new Generate calls get UNAVAILABLE, open streams run to their end), and keeps
// grpc.health.v1 in step: NOT_SERVING except while SERVING.
//
//   GenerationService service(options, metrics);
//   builder.RegisterService(&service);  ... service.SetHealth(server->GetHealthCheckService());
//   service.StartServing(serving.get());
//   service.StartDraining();  service.WaitForStreams(absl::Seconds(30));
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "moe/v1/generation.grpc.pb.h"
#include "server/api_key.h"
#include "server/metrics.h"
#include "server/server_options.h"
#include "server/serving_model.h"

namespace moe::server {

class GenerationService final : public v1::Generation::CallbackService {
 public:
  GenerationService(const ServerOptions& options, Metrics& metrics);

  void SetHealth(grpc::HealthCheckServiceInterface* health);
  // `serving` outlives the service's calls (the gRPC server is shut down first).
  void StartServing(ServingModel* serving);
  void StartDraining();
  // Waits until no Generate stream is open; false if some still are after `timeout`.
  bool WaitForStreams(absl::Duration timeout);

  v1::ServerInfo::State state() const;
  int active_streams() const;
  ServingModel* serving() const;  // nullptr while loading

  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Abort(grpc::CallbackServerContext* context,
                                  const v1::AbortRequest* request,
                                  v1::AbortResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const v1::DetokenizeRequest* request,
                                       v1::DetokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* response) override;
  grpc::ServerUnaryReactor* GetLoad(grpc::CallbackServerContext* context,
                                    const v1::GetLoadRequest* request, v1::Load* response) override;

 private:
  // OK, or UNAUTHENTICATED unless the call's `authorization` metadata carries the API key.
  absl::Status Authenticate(const grpc::CallbackServerContext& context) const;
  // The serving model, or UNAVAILABLE naming the state.
  absl::StatusOr<ServingModel*> Serving() const;
  // Registers a stream under the client's `id` (made when empty): ALREADY_EXISTS if an
  // unfinished one has it, unless that one's client has cancelled it (a retry can arrive
  // before the server has handled the cancel). Returns the engine's id for the stream's
  // request, unique to it.
  absl::StatusOr<std::string> Register(std::string& id, grpc::CallbackServerContext* context);
  // Frees `id` if it is still the stream's whose request is `engine_id`.
  void Unregister(const std::string& id, const std::string& engine_id);
  void SetState(v1::ServerInfo::State state);
  void PublishHealth() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ServerOptions options_;
  const ApiKey api_key_;
  Metrics& metrics_;
  const absl::Time start_time_ = absl::Now();

  mutable absl::Mutex mu_;
  v1::ServerInfo::State state_ ABSL_GUARDED_BY(mu_) = v1::ServerInfo::STATE_LOADING;
  ServingModel* serving_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::HealthCheckServiceInterface* health_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Unfinished Generate streams by the client's id. An entry goes before its stream
  // finishes, so `context` is alive while it is here.
  struct Stream {
    std::string engine_id;  // of its request
    grpc::CallbackServerContext* context;
  };
  std::map<std::string, Stream> streams_ ABSL_GUARDED_BY(mu_);
  // Engine ids of requests an Abort came for before they reached the engine.
  std::set<std::string> early_aborts_ ABSL_GUARDED_BY(mu_);
  uint64_t next_stream_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace moe::server
