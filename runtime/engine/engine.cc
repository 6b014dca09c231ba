#include "runtime/engine/engine.h"

#include <algorithm>
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "runtime/check.h"
#include "runtime/engine/stop_checker.h"
#include "runtime/status_macros.h"

namespace moe {
namespace {

absl::Status ValidateSampling(const SamplingParams& s, int vocab_size) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  if (!(s.temperature >= 0)) return bad(absl::StrCat("temperature must be >= 0, got ", s.temperature));
  if (s.top_k < 0) return bad(absl::StrCat("top_k must be >= 0, got ", s.top_k));
  if (!(s.top_p > 0 && s.top_p <= 1)) return bad(absl::StrCat("top_p must be in (0, 1], got ", s.top_p));
  if (!(s.min_p >= 0 && s.min_p <= 1)) return bad(absl::StrCat("min_p must be in [0, 1], got ", s.min_p));
  if (!(s.repetition_penalty > 0)) {
    return bad(absl::StrCat("repetition_penalty must be > 0, got ", s.repetition_penalty));
  }
  if (s.n < 1) return bad(absl::StrCat("n must be >= 1, got ", s.n));
  if (s.logprobs > 20) return bad(absl::StrCat("logprobs must be <= 20, got ", s.logprobs));
  for (const auto& [token, bias] : s.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return bad(absl::StrCat("logit_bias names token ", token, ", vocabulary is ", vocab_size));
    }
  }
  return absl::OkStatus();
}

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kLength: return "length";
    case FinishReason::kTimeLimit: return "time_limit";
    case FinishReason::kAborted: return "aborted";
    case FinishReason::kError: return "error";
  }
  return "?";
}

int KvBlocksForBudget(const ModelInfo& info, int block_size, int64_t bytes) {
  const KvCacheShape one_block{.num_layers = info.num_layers, .num_blocks = 1, .block_size = block_size,
                               .num_kv_heads = info.num_kv_heads, .head_dim = info.head_dim};
  return static_cast<int>(bytes / static_cast<int64_t>(one_block.BlockBytes(DType::kF32)));
}

namespace {

EngineOptions Resolve(const Model& model, EngineOptions options) {
  if (options.kv_cache_bytes > 0) {
    options.num_kv_blocks = KvBlocksForBudget(model.info(), options.block_size, options.kv_cache_bytes);
  }
  CHECK(options.num_kv_blocks > 0) << "the KV cache budget holds no block";
  return options;
}

}  // namespace

Engine::Engine(Model& model, const EngineOptions& options)
    : model_(model),
      options_(Resolve(model, options)),
      kv_(*KvCache::Create({.num_layers = model.info().num_layers,
                            .num_blocks = options_.num_kv_blocks,
                            .block_size = options_.block_size,
                            .num_kv_heads = model.info().num_kv_heads,
                            .head_dim = model.info().head_dim})),
      blocks_({.num_blocks = options_.num_kv_blocks,
               .block_size = options_.block_size,
               .enable_prefix_caching = options_.enable_prefix_caching}),
      scheduler_(options_.scheduler, blocks_) {
  PublishStats();
}

Engine::~Engine() { Stop(); }

absl::Status Engine::Submit(Request request, std::shared_ptr<OutputSink> sink) {
  const ModelInfo& info = model_.info();
  if (request.id.empty()) return absl::InvalidArgumentError("request id is empty");
  if (request.prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  for (size_t i = 0; i < request.prompt.size(); ++i) {
    if (request.prompt[i] < 0 || request.prompt[i] >= info.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " has id ", request.prompt[i],
                                                     ", vocabulary is ", info.vocab_size));
    }
  }
  const int prompt_len = static_cast<int>(request.prompt.size());
  if (prompt_len >= info.max_context) {
    return absl::InvalidArgumentError(absl::StrCat("prompt has ", prompt_len,
                                                   " tokens, the context holds ", info.max_context));
  }
  if (request.stopping.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be >= 1");
  if (request.stopping.min_tokens < 0) return absl::InvalidArgumentError("min_tokens must be >= 0");
  RETURN_IF_ERROR(ValidateSampling(request.sampling, info.vocab_size));
  if (!request.stopping.stop_strings.empty() && !options_.text_streams) {
    return absl::FailedPreconditionError("stop strings need a tokenizer, and the engine has none");
  }
  for (const std::string& s : request.stopping.stop_strings) {
    if (s.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
  }
  request.stopping.max_tokens = std::min(request.stopping.max_tokens, info.max_context - prompt_len);
  const int blocks_needed = blocks_.BlocksFor(prompt_len + request.stopping.max_tokens);
  if (blocks_needed > options_.num_kv_blocks) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request needs ", blocks_needed, " KV blocks (", prompt_len, " prompt + ",
        request.stopping.max_tokens, " new tokens), the pool has ", options_.num_kv_blocks));
  }
  if (!request.sampling.seed.has_value()) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    request.sampling.seed = rng();
  }
  absl::MutexLock lock(&mu_);
  const int queued = static_cast<int>(inbox_.size()) + stats_.waiting;
  if (options_.max_waiting_requests > 0 && queued >= options_.max_waiting_requests) {
    return absl::ResourceExhaustedError(absl::StrCat("the waiting queue is full (", queued,
                                                     " requests); retry later"));
  }
  if (live_ids_.count(request.id)) {
    return absl::AlreadyExistsError(absl::StrCat("request id \"", request.id, "\" is already running"));
  }
  live_ids_[request.id] = 1;
  inbox_.push_back({std::make_shared<const Request>(std::move(request)), std::move(sink)});
  return absl::OkStatus();
}

void Engine::Abort(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  aborts_.push_back(request_id);
}

void Engine::DrainInbox() {
  std::vector<Submission> inbox;
  std::vector<std::string> aborts;
  {
    absl::MutexLock lock(&mu_);
    inbox.swap(inbox_);
    aborts.swap(aborts_);
  }
  for (Submission& s : inbox) Admit(std::move(s.request), std::move(s.sink));
  for (const std::string& id : aborts) {
    auto it = requests_.find(id);
    if (it != requests_.end()) FinishRequest(it->second, FinishReason::kAborted);
  }
}

void Engine::Admit(std::shared_ptr<const Request> request, std::shared_ptr<OutputSink> sink) {
  RequestState& state = requests_[request->id];
  state.request = request;
  const absl::Time now = absl::Now();
  const uint64_t arrival = next_arrival_++;
  for (int c = 0; c < request->sampling.n; ++c) {
    auto seq = std::make_unique<Sequence>();
    seq->request = request;
    seq->choice = c;
    seq->leader = c == 0 ? nullptr : state.choices[0].get();
    seq->seed = *request->sampling.seed;
    seq->arrival_order = arrival;
    seq->tokens = request->prompt;
    seq->prompt_len = static_cast<int>(request->prompt.size());
    seq->sink = sink;
    seq->stop = std::make_unique<StopChecker>(
        request->stopping, model_.info().eos_token_ids,
        options_.text_streams ? options_.text_streams() : nullptr);
    seq->arrival = now;
    scheduler_.Add(seq.get());
    state.choices.push_back(std::move(seq));
  }
  state.unfinished = request->sampling.n;
  if (request->stopping.time_limit != absl::InfiniteDuration()) ++num_time_limited_;
}

void Engine::FinishRequest(RequestState& state, FinishReason reason) {
  // Finish() may erase `state` with its last choice: collect first.
  std::vector<Sequence*> open;
  for (auto& seq : state.choices) {
    if (seq->status != SequenceStatus::kFinished) open.push_back(seq.get());
  }
  for (Sequence* seq : open) Finish(*seq, reason);
}

void Engine::Finish(Sequence& seq, FinishReason reason, std::string matched_stop,
                    absl::Status error) {
  if (seq.status == SequenceStatus::kFinished) return;
  if (reason == FinishReason::kTimeLimit) {
    if (std::string rest = seq.stop->Flush(); !rest.empty()) seq.sink->OnDelta({.choice = seq.choice, .text = rest});
  }
  scheduler_.Remove(&seq);
  const absl::Time now = absl::Now();
  FinalOutput final{.choice = seq.choice, .reason = reason, .matched_stop = std::move(matched_stop),
                    .error = std::move(error)};
  final.usage = {.prompt_tokens = seq.prompt_len,
                 .completion_tokens = seq.num_output(),
                 .cached_tokens = seq.num_cached_tokens};
  auto since_arrival = [&](absl::Time t) { return t == absl::InfiniteFuture() ? absl::ZeroDuration() : t - seq.arrival; };
  final.timings = {.queue = since_arrival(seq.first_scheduled),
                   .time_to_first_token = since_arrival(seq.first_token),
                   .end_to_end = now - seq.arrival};
  seq.sink->OnFinal(final);

  const std::string id = seq.request->id;
  RequestState& state = requests_[id];
  if (--state.unfinished == 0) {
    if (state.request->stopping.time_limit != absl::InfiniteDuration()) --num_time_limited_;
    requests_.erase(id);
    absl::MutexLock lock(&mu_);
    live_ids_.erase(id);
  }
}

void Engine::ExpireTimeLimits() {
  if (num_time_limited_ == 0) return;
  const absl::Time now = absl::Now();
  std::vector<RequestState*> expired;
  for (auto& [id, state] : requests_) {
    const absl::Duration limit = state.request->stopping.time_limit;
    if (limit != absl::InfiniteDuration() && now - state.choices[0]->arrival > limit) {
      expired.push_back(&state);
    }
  }
  for (RequestState* state : expired) FinishRequest(*state, FinishReason::kTimeLimit);
}

StepBatch Engine::BuildBatch(const StepPlan& plan) const {
  const int bs = options_.block_size;
  StepBatch batch;
  batch.max_blocks_per_seq = 1;
  for (const ScheduledSequence& s : plan.scheduled) {
    batch.max_blocks_per_seq = std::max<int>(batch.max_blocks_per_seq, s.seq->block_table.size());
  }
  batch.query_starts.push_back(0);
  for (const ScheduledSequence& s : plan.scheduled) {
    const Sequence& seq = *s.seq;
    for (int p = seq.num_computed; p < seq.num_computed + s.num_new_tokens; ++p) {
      batch.token_ids.push_back(seq.tokens[p]);
      batch.positions.push_back(p);
      batch.slot_mapping.push_back(int64_t{seq.block_table[p / bs]} * bs + p % bs);
    }
    batch.query_starts.push_back(batch.num_tokens());
    batch.context_lens.push_back(seq.num_computed + s.num_new_tokens);
    batch.block_tables.insert(batch.block_tables.end(), seq.block_table.begin(), seq.block_table.end());
    batch.block_tables.resize(batch.context_lens.size() * batch.max_blocks_per_seq, 0);
    if (s.samples()) batch.logits_rows.push_back(batch.num_tokens() - 1);
  }
  return batch;
}

void Engine::EmitToken(Sequence& seq, const Sampled& sampled) {
  seq.tokens.push_back(sampled.token);
  if (seq.first_token == absl::InfiniteFuture()) seq.first_token = absl::Now();
  StopChecker::Step step = seq.stop->Append(sampled.token, seq.num_output());
  OutputDelta delta{.choice = seq.choice, .token_ids = {sampled.token}, .text = std::move(step.text)};
  if (sampled.logprobs.has_value()) delta.logprobs.push_back(*sampled.logprobs);
  seq.sink->OnDelta(delta);
  if (step.finish.has_value()) Finish(seq, *step.finish, std::move(step.matched_stop));
}

void Engine::Postprocess(const StepPlan& plan, const Tensor& logits) {
  scheduler_.Advance(plan);
  const int64_t V = logits.dim(1);
  int64_t row = 0;
  for (const ScheduledSequence& s : plan.scheduled) {
    Sequence& seq = *s.seq;
    if (seq.num_computed != static_cast<int>(seq.tokens.size())) continue;  // mid-prefill
    const std::vector<int32_t> masked = seq.stop->MaskedTokens(seq.num_output());
    const absl::Span<const int32_t> tokens(seq.tokens);
    const Sampled sampled = sampler_.Sample({.logits = absl::MakeConstSpan(logits.Row<float>(row++), V),
                                             .params = &seq.request->sampling,
                                             .prompt = tokens.subspan(0, seq.prompt_len),
                                             .output = tokens.subspan(seq.prompt_len),
                                             .masked_tokens = masked,
                                             .seed = seq.seed,
                                             .choice = seq.choice});
    EmitToken(seq, sampled);
  }
}

absl::StatusOr<bool> Engine::Step() {
  absl::Time t0 = absl::Now();
  DrainInbox();
  ExpireTimeLimits();
  const StepPlan plan = scheduler_.Schedule();
  preemptions_ += plan.preempted.size();
  if (plan.empty()) return false;
  for (const ScheduledSequence& s : plan.scheduled) {
    if (s.seq->first_scheduled == absl::InfiniteFuture()) s.seq->first_scheduled = t0;
  }
  absl::Time t1 = absl::Now();
  const StepBatch batch = BuildBatch(plan);
  absl::Time t2 = absl::Now();
  absl::StatusOr<Tensor> logits = model_.Forward(batch, kv_);
  absl::Time t3 = absl::Now();
  if (!logits.ok()) {
    for (const ScheduledSequence& s : plan.scheduled) {
      Sequence& seq = *s.seq;
      if (seq.status != SequenceStatus::kFinished) Finish(seq, FinishReason::kError, "", logits.status());
    }
    return logits.status();
  }
  Postprocess(plan, *logits);
  phase_times_.schedule += t1 - t0;
  phase_times_.build_batch += t2 - t1;
  phase_times_.forward += t3 - t2;
  phase_times_.postprocess += absl::Now() - t3;
  ++steps_;
  PublishStats();
  return true;
}

void Engine::PublishStats() {
  absl::MutexLock lock(&mu_);
  stats_ = {.running = scheduler_.num_running(),
            .waiting = scheduler_.num_waiting(),
            .free_blocks = blocks_.num_free_blocks(),
            .total_blocks = blocks_.num_blocks(),
            .steps = steps_,
            .preemptions = preemptions_,
            .prefix_cache = blocks_.stats(),
            .phase_times = phase_times_};
}

absl::Status Engine::RunUntilIdle() {
  while (true) {
    ASSIGN_OR_RETURN(bool did_work, Step());
    if (!did_work && !scheduler_.has_work()) {
      absl::MutexLock lock(&mu_);
      if (inbox_.empty() && aborts_.empty()) break;
    }
  }
  PublishStats();
  return absl::OkStatus();
}

void Engine::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { Loop(); });
}

void Engine::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  // Every accepted request gets its final record, even when the engine stops under it.
  DrainInbox();
  while (!requests_.empty()) FinishRequest(requests_.begin()->second, FinishReason::kAborted);
  PublishStats();
}

void Engine::Loop() {
  auto has_news = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !inbox_.empty() || !aborts_.empty();
  };
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    absl::StatusOr<bool> did_work = Step();
    if (!did_work.ok()) std::cerr << "engine: step failed: " << did_work.status() << "\n";
    if (did_work.ok() && *did_work) continue;
    // Idle (or blocked on something only time resolves): sleep until news arrives.
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&has_news),
                         scheduler_.has_work() ? absl::Milliseconds(1) : absl::Milliseconds(100));
  }
}

EngineStats Engine::GetStats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace moe
