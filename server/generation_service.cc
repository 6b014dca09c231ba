// GenerationService (see generation_service.h).
#include "server/generation_service.h"

#include "absl/strings/str_cat.h"
#include "moe/config.h"
#include "runtime/dtype.h"
#include "runtime/status_macros.h"
#include "server/generate_call.h"
#include "server/grpc_status.h"
#include "server/log.h"
#include "server/request_builder.h"

namespace moe::server {
namespace {

constexpr size_t kMaxRequestIdBytes = 256;

// Finishes a unary call with `status`.
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* context, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

const char* StateName(v1::ServerInfo::State state) {
  switch (state) {
    case v1::ServerInfo::STATE_LOADING:
      return "loading";
    case v1::ServerInfo::STATE_SERVING:
      return "serving";
    case v1::ServerInfo::STATE_DRAINING:
      return "draining";
    default:
      return "unknown";
  }
}

}  // namespace

GenerationService::GenerationService(const ServerOptions& options, Metrics& metrics)
    : options_(options), api_key_(options.api_key), metrics_(metrics) {}

absl::Status GenerationService::Authenticate(const grpc::CallbackServerContext& context) const {
  if (!api_key_.required()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  const auto it = metadata.find("authorization");
  const std::string_view authorization = it == metadata.end() ? std::string_view()
                                                               : std::string_view(it->second.data(), it->second.size());
  if (api_key_.Accepts(authorization)) return absl::OkStatus();
  return absl::UnauthenticatedError(absl::StrCat(
      it == metadata.end() ? "no" : "a wrong", " API key: send metadata \"authorization: Bearer <key>\""));
}

void GenerationService::SetHealth(grpc::HealthCheckServiceInterface* health) {
  absl::MutexLock lock(&mu_);
  health_ = health;
  PublishHealth();
}

// Both the server as a whole ("") and moe.v1.Generation by name, for probes that ask for it.
void GenerationService::PublishHealth() {
  if (health_ == nullptr) return;
  const bool serving = state_ == v1::ServerInfo::STATE_SERVING;
  health_->SetServingStatus(serving);
  health_->SetServingStatus(v1::Generation::service_full_name(), serving);
}

void GenerationService::SetState(v1::ServerInfo::State state) {
  absl::MutexLock lock(&mu_);
  state_ = state;
  PublishHealth();
  Log(LogLevel::kInfo, absl::StrCat("state: ", StateName(state)));
}

void GenerationService::StartServing(ServingModel* serving) {
  {
    absl::MutexLock lock(&mu_);
    serving_ = serving;
  }
  SetState(v1::ServerInfo::STATE_SERVING);
}

void GenerationService::StartDraining() { SetState(v1::ServerInfo::STATE_DRAINING); }

bool GenerationService::WaitForStreams(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto none_open = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&none_open), timeout);
}

v1::ServerInfo::State GenerationService::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

int GenerationService::active_streams() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(streams_.size());
}

ServingModel* GenerationService::serving() const {
  absl::MutexLock lock(&mu_);
  return serving_;
}

absl::StatusOr<ServingModel*> GenerationService::Serving() const {
  absl::MutexLock lock(&mu_);
  if (serving_ == nullptr) return absl::UnavailableError("the model is still loading; retry later");
  return serving_;
}

absl::StatusOr<std::string> GenerationService::Register(std::string& id,
                                                       grpc::CallbackServerContext* context) {
  if (id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id has ", id.size(), " bytes, at most ", kMaxRequestIdBytes));
  }
  absl::MutexLock lock(&mu_);
  if (state_ != v1::ServerInfo::STATE_SERVING) {
    return absl::UnavailableError(
        absl::StrCat("the server is ", StateName(state_), " and takes no new requests"));
  }
  if (id.empty()) {
    do {
      id = absl::StrCat("gen-", next_id_++);
    } while (streams_.count(id) > 0);
  }
  auto it = streams_.find(id);
  if (it != streams_.end() && !it->second.context->IsCancelled()) {
    return absl::AlreadyExistsError(absl::StrCat("request_id \"", id, "\" is already running"));
  }
  // A cancelled stream's entry is taken over; its own Unregister then finds another engine id.
  std::string engine_id = absl::StrCat(id, "#", next_stream_++);
  streams_[id] = Stream{.engine_id = engine_id, .context = context};
  return engine_id;
}

void GenerationService::Unregister(const std::string& id, const std::string& engine_id) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(id);
  if (it != streams_.end() && it->second.engine_id == engine_id) streams_.erase(it);
  early_aborts_.erase(engine_id);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* GenerationService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  // (the client's request id, the request with the engine's id)
  auto built = [&]() -> absl::StatusOr<std::pair<std::string, BuiltRequest>> {
    RETURN_IF_ERROR(Authenticate(*context));
    if (state() != v1::ServerInfo::STATE_SERVING) {
      return absl::UnavailableError(
          absl::StrCat("the server is ", StateName(state()), " and takes no new requests"));
    }
    ASSIGN_OR_RETURN(ServingModel * serving, Serving());
    ASSIGN_OR_RETURN(BuiltRequest b, BuildRequest(*request, *serving));
    std::string client_id = b.request.id;
    ASSIGN_OR_RETURN(b.request.id, Register(client_id, context));
    return std::make_pair(std::move(client_id), std::move(b));
  }();
  if (!built.ok()) {
    metrics_.OnRejected(CodeName(built.status()));
    Log(LogLevel::kDebug, absl::StrCat("Generate refused: ", built.status().ToString()));
    return GenerateCall::Fail(ToGrpcStatus(built.status()));
  }
  const std::string id = built->first;
  BuiltRequest& accepted = built->second;
  const std::string engine_id = accepted.request.id;
  Log(LogLevel::kDebug,
      absl::StrCat("Generate ", id, ": ", accepted.request.prompt.size(), " prompt tokens"));
  return GenerateCall::Start({.engine = &serving()->engine(),
                              .metrics = &metrics_,
                              .request_id = id,
                              .max_message_bytes = static_cast<size_t>(options_.max_message_bytes),
                              .max_pending_bytes = static_cast<size_t>(options_.max_stream_buffer_bytes),
                              .on_finish = [this, id, engine_id]() { Unregister(id, engine_id); },
                              .take_early_abort =
                                  [this, engine_id]() {
                                    absl::MutexLock lock(&mu_);
                                    return early_aborts_.erase(engine_id) > 0;
                                  }},
                             std::move(accepted));
}

grpc::ServerUnaryReactor* GenerationService::Abort(grpc::CallbackServerContext* context,
                                                   const v1::AbortRequest* request,
                                                   v1::AbortResponse* response) {
  if (absl::Status s = Authenticate(*context); !s.ok()) return Reply(context, s);
  absl::StatusOr<ServingModel*> serving = Serving();
  if (!serving.ok()) return Reply(context, serving.status());
  {
    // Held across the engine's Abort: while the id is registered it names this stream's
    // request, and no new stream can take the id over before the abort is queued. A stream
    // registers before its request reaches the engine; an abort in between is kept for the
    // stream to apply once the engine has it.
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(request->request_id());
    if (it == streams_.end()) {
      return Reply(context, absl::NotFoundError(absl::StrCat("no running request has request_id \"",
                                                             request->request_id(), "\"")));
    }
    const std::string& engine_id = it->second.engine_id;
    if (!(*serving)->engine().Abort(engine_id)) early_aborts_.insert(engine_id);
  }
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  if (absl::Status s = Authenticate(*context); !s.ok()) return Reply(context, s);
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(ServingModel * serving, Serving());
    std::vector<int32_t> ids;
    switch (request->input_case()) {
      case v1::TokenizeRequest::kText: {
        const bool special =
            request->has_add_special_tokens() ? request->add_special_tokens() : true;
        if (request->text().empty() && serving->tokenizer() != nullptr) {
          // Not a prompt: empty text encodes to nothing, or to the special tokens alone.
          ASSIGN_OR_RETURN(ids, serving->tokenizer()->Encode("", {.add_special_tokens = special}));
          break;
        }
        ASSIGN_OR_RETURN(ids, EncodeText(request->text(), special, *serving, "text"));
        break;
      }
      case v1::TokenizeRequest::kChat: {
        ASSIGN_OR_RETURN(ids, EncodeChat(request->chat(), *serving));
        break;
      }
      case v1::TokenizeRequest::INPUT_NOT_SET:
        return absl::InvalidArgumentError("input is missing: set text or chat");
    }
    for (int32_t id : ids) {
      response->add_token_ids(id);
      const std::string* token = serving->tokenizer()->IdToToken(id);
      response->add_tokens(token != nullptr ? *token : "");
    }
    return absl::OkStatus();
  }();
  return Reply(context, status);
}

grpc::ServerUnaryReactor* GenerationService::Detokenize(grpc::CallbackServerContext* context,
                                                        const v1::DetokenizeRequest* request,
                                                        v1::DetokenizeResponse* response) {
  if (absl::Status s = Authenticate(*context); !s.ok()) return Reply(context, s);
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(ServingModel * serving, Serving());
    if (serving->tokenizer() == nullptr) {
      return absl::FailedPreconditionError("Detokenize needs a tokenizer, and this model has none");
    }
    RETURN_IF_ERROR(
        CheckTokenIds(request->token_ids(), "token_ids", serving->tokenizer()->vocab_size()));
    const bool skip = request->has_skip_special_tokens() ? request->skip_special_tokens() : true;
    absl::StatusOr<std::string> text = serving->tokenizer()->Decode(
        absl::MakeConstSpan(request->token_ids().data(), request->token_ids().size()),
        {.skip_special_tokens = skip});
    if (!text.ok())
      return absl::InvalidArgumentError(absl::StrCat("token_ids: ", text.status().message()));
    response->set_text(*std::move(text));
    return absl::OkStatus();
  }();
  return Reply(context, status);
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::GetModelInfoRequest* request,
                                                          v1::ModelInfo* response) {
  if (absl::Status s = Authenticate(*context); !s.ok()) return Reply(context, s);
  absl::StatusOr<ServingModel*> serving = Serving();
  if (!serving.ok()) return Reply(context, serving.status());
  const MoeConfig& config = (*serving)->config();
  const ModelInfo& info = (*serving)->model().info();
  response->set_model_dir((*serving)->model_dir());
  response->set_architecture(info.architecture);
  response->set_vocab_size(info.vocab_size);
  response->set_max_context(info.max_context);
  response->set_num_layers(info.num_layers);
  response->set_num_experts(config.num_experts);
  response->set_top_k(config.top_k);
  response->set_dtype(DTypeName(config.dtype));
  response->set_backend((*serving)->backend());
  response->set_expert_parallel_size(1);
  response->set_has_tokenizer((*serving)->tokenizer() != nullptr);
  response->set_has_chat_template((*serving)->chat_template() != nullptr);
  for (int id : info.eos_token_ids) response->add_eos_token_ids(id);
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::GetServerInfo(grpc::CallbackServerContext* context,
                                                           const v1::GetServerInfoRequest* request,
                                                           v1::ServerInfo* response) {
  if (absl::Status s = Authenticate(*context); !s.ok()) return Reply(context, s);
  const EngineOptions& engine = options_.model.engine;
  response->set_version(kServerVersion);
  response->set_state(state());
  response->set_uptime_s(absl::ToDoubleSeconds(absl::Now() - start_time_));
  response->set_max_batched_tokens(engine.scheduler.max_num_batched_tokens);
  response->set_max_seqs(engine.scheduler.max_num_seqs);
  if (ServingModel* s = serving()) response->set_kv_blocks(s->num_kv_blocks());
  response->set_kv_block_size(engine.block_size);
  response->set_queue_limit(engine.max_waiting_requests);
  response->set_drain_timeout_s(absl::ToDoubleSeconds(options_.drain_timeout));
  response->set_max_message_bytes(options_.max_message_bytes);
  response->set_grpc_version(grpc::Version());
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* GenerationService::GetLoad(grpc::CallbackServerContext* context,
                                                     const v1::GetLoadRequest* request,
                                                     v1::Load* response) {
  if (absl::Status s = Authenticate(*context); !s.ok()) return Reply(context, s);
  absl::StatusOr<ServingModel*> serving = Serving();
  if (!serving.ok()) return Reply(context, serving.status());
  const EngineStats stats = (*serving)->engine().GetStats();
  response->set_running(stats.running);
  response->set_waiting(stats.waiting);
  response->set_kv_blocks_used(stats.total_blocks - stats.free_blocks);
  response->set_kv_blocks_total(stats.total_blocks);
  response->set_kv_usage(stats.total_blocks > 0
                             ? double(stats.total_blocks - stats.free_blocks) / stats.total_blocks
                             : 0.0);
  const PrefixCacheStats& cache = stats.prefix_cache;
  response->set_prefix_cache_hit_rate(
      cache.queried_tokens > 0 ? double(cache.hit_tokens) / cache.queried_tokens : 0.0);
  response->set_tokens_per_second(metrics_.TokensPerSecond());
  response->set_steps(stats.steps);
  response->set_preemptions(stats.preemptions);
  for (int64_t n : (*serving)->model().RoutedTokensPerExpert()) {
    response->add_routed_tokens_per_expert(n);
  }
  response->set_active_streams(active_streams());
  for (size_t r = 0; r < stats.ranks.size(); ++r) {
    const RankLoad& load = stats.ranks[r];
    v1::RankLoad* out = response->add_ranks();
    out->set_rank(static_cast<int>(r));
    out->set_running(load.running);
    out->set_waiting(load.waiting);
    out->set_kv_blocks_used(load.total_blocks - load.free_blocks);
    out->set_kv_blocks_total(load.total_blocks);
    out->set_steps(load.steps);
    out->set_expert_rows_sent(load.expert_rows_sent);
    out->set_expert_rows_received(load.expert_rows_received);
  }
  if (!stats.ranks.empty()) response->set_rank_load_imbalance(LoadImbalance(stats.ranks));
  return Reply(context, absl::OkStatus());
}

}  // namespace moe::server
