#include "runtime/engine/engine.h"

#include <algorithm>
#include <iostream>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "runtime/check.h"
#include "runtime/engine/request_validation.h"
#include "runtime/engine/stop_checker.h"
#include "runtime/status_macros.h"

namespace moe {
int64_t KvBlocksForBudget(const ModelInfo& info, int block_size, int64_t bytes) {
  const KvCacheShape one_block{.num_layers = info.num_layers, .num_blocks = 1, .block_size = block_size,
                               .num_kv_heads = info.num_kv_heads, .head_dim = info.head_dim};
  return bytes / static_cast<int64_t>(one_block.BlockBytes(info.kv_cache_dtype));
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(Model& model, EngineOptions options) {
  const int bs = options.block_size;
  if (bs < 1 || bs > 1024 || (bs & (bs - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("block size must be a power of two in [1, 1024], got ", bs));
  }
  if (options.kv_cache_bytes > 0) {
    const int64_t blocks = KvBlocksForBudget(model.info(), bs, options.kv_cache_bytes);
    options.num_kv_blocks = static_cast<int>(std::min<int64_t>(blocks, std::numeric_limits<int32_t>::max() / bs));
  }
  if (options.num_kv_blocks < 1) {
    return absl::InvalidArgumentError("the KV cache holds no block: raise its memory budget or block count");
  }
  if (options.scheduler.max_num_batched_tokens < 1 || options.scheduler.max_num_seqs < 1) {
    return absl::InvalidArgumentError("max_num_batched_tokens and max_num_seqs must be >= 1");
  }
  if (options.max_waiting_requests < 0) return absl::InvalidArgumentError("max_waiting_requests must be >= 0");
  ASSIGN_OR_RETURN(KvCache kv, model.CreateKvCache({.num_layers = model.info().num_layers,
                                                .num_blocks = options.num_kv_blocks,
                                                .block_size = bs,
                                                .num_kv_heads = model.info().num_kv_heads,
                                                .head_dim = model.info().head_dim}));
  return std::unique_ptr<Engine>(new Engine(model, std::move(options), std::move(kv)));
}

Engine::Engine(Model& model, EngineOptions options, KvCache kv)
    : model_(model),
      options_(std::move(options)),
      kv_(std::move(kv)),
      blocks_({.num_blocks = options_.num_kv_blocks,
               .block_size = options_.block_size,
               .enable_prefix_caching = options_.enable_prefix_caching}),
      scheduler_(options_.scheduler, blocks_) {
  if (options_.group != nullptr && options_.group->Size() > 1) {
    relay_ = std::make_unique<GroupRelay>(*options_.group, options_.block_size);
  }
  PublishStats();
}

Engine::~Engine() { Stop(); }

absl::Status Engine::Submit(Request request, std::shared_ptr<OutputSink> sink) {
  if (relay_ != nullptr && relay_->rank() != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this is rank ", relay_->rank(), " of an expert-parallel group: requests enter at rank 0"));
  }
  const ModelInfo& info = model_.info();
  // Front ends name their requests; the id is not a client's parameter.
  if (request.id.empty()) return absl::InvalidArgumentError("request id is empty");
  RETURN_IF_ERROR(ValidateRequest(request, {.vocab_size = info.vocab_size,
                                            .max_context = info.max_context,
                                            .has_tokenizer = static_cast<bool>(options_.text_streams)}));
  const int prompt_len = static_cast<int>(request.prompt.size());
  request.stopping.max_tokens = std::min(request.stopping.max_tokens, info.max_context - prompt_len);
  const int blocks_needed = blocks_.BlocksFor(prompt_len + request.stopping.max_tokens);
  if (blocks_needed > options_.num_kv_blocks) {  // it could never run: not a retry-later
    const int64_t fits = int64_t{options_.num_kv_blocks} * options_.block_size - prompt_len;
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt_len, " tokens) + max_tokens (", request.stopping.max_tokens,
        ") needs ", blocks_needed, " KV blocks, the pool has ", options_.num_kv_blocks,
        fits > 0 ? absl::StrCat(": max_tokens can be at most ", fits) : ": the prompt alone is too long"));
  }
  if (!request.sampling.seed.has_value()) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    request.sampling.seed = rng();
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the engine is stopping");
  // Sequences waiting at the last step plus requests not yet admitted: close enough to bound
  // the queue without waiting for the engine thread.
  const int queued = static_cast<int>(inbox_.size()) + stats_.waiting;
  if (options_.max_waiting_requests > 0 && queued >= options_.max_waiting_requests) {
    return absl::ResourceExhaustedError(absl::StrCat("the waiting queue is full (", queued,
                                                     " requests); retry later"));
  }
  const uint64_t number = next_submission_++;
  if (!live_.try_emplace(request.id, number).second) {
    return absl::AlreadyExistsError(absl::StrCat("request id \"", request.id, "\" is already running"));
  }
  inbox_.push_back({number, std::make_shared<const Request>(std::move(request)), std::move(sink),
                    absl::Now()});
  return absl::OkStatus();
}

bool Engine::Abort(const std::string& request_id) {
  absl::MutexLock lock(&mu_);
  auto it = live_.find(request_id);
  if (it == live_.end()) return false;  // late aborts are moot
  aborts_.push_back({request_id, it->second});
  return true;
}

absl::Status Engine::DrainInbox() {
  std::vector<Submission> inbox;
  std::vector<AbortOrder> aborts;
  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    inbox.swap(inbox_);
    aborts.swap(aborts_);
    stopping = stopping_;  // read with the inbox: nothing is accepted after the stop order
  }
  if (relay_ != nullptr) {
    ASSIGN_OR_RETURN(GroupRelay::Control control,
                     relay_->ExchangeControl(std::move(inbox), std::move(aborts), stopping));
    inbox = std::move(control.admit);
    aborts = std::move(control.aborts);
    group_stopped_ = control.stop;
  }
  for (Submission& s : inbox) Admit(std::move(s));
  for (const AbortOrder& abort : aborts) {
    // The request it was aimed at may have finished since, and its id been reused.
    auto it = requests_.find(abort.request_id);
    if (it != requests_.end() && it->second.submission == abort.submission) {
      FinishRequest(it->second, FinishReason::kAborted);
    }
  }
  return absl::OkStatus();
}

void Engine::Admit(Submission submission) {
  const std::shared_ptr<const Request>& request = submission.request;
  const std::shared_ptr<OutputSink>& sink = submission.sink;
  RequestState& state = requests_[request->id];
  state.submission = submission.number;
  state.request = request;
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
        options_.text_streams ? options_.text_streams(*request) : nullptr);
    seq->arrival = submission.submitted;
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
  // Published before the final event: a client that has its answer never reads a load that
  // still counts it (running, KV blocks), as it could until the step's end before.
  PublishStats();
  const absl::Time now = absl::Now();
  FinalOutput final{.choice = seq.choice, .reason = reason, .matched_stop = std::move(matched_stop),
                    .error = std::move(error)};
  final.usage = {.prompt_tokens = seq.prompt_len,
                 .completion_tokens = seq.num_output(),
                 .cached_tokens = seq.num_cached_tokens};
  if (const int n = seq.num_output(); n > 0) {
    final.confidence = {.tokens = n, .mean_logprob = seq.logprob_sum / n, .min_logprob = seq.min_logprob};
  }
  auto since_arrival = [&](absl::Time t) { return t == absl::InfiniteFuture() ? absl::ZeroDuration() : t - seq.arrival; };
  // A sequence that was never scheduled spent its whole life in the queue.
  const absl::Time dequeued = std::min(seq.first_scheduled, now);
  final.timings = {.queue = dequeued - seq.arrival,
                   .time_to_first_token = since_arrival(seq.first_token),
                   .end_to_end = now - seq.arrival};
  seq.sink->OnFinal(final);

  const std::string id = seq.request->id;
  RequestState& state = requests_[id];
  if (--state.unfinished == 0) {
    if (state.request->stopping.time_limit != absl::InfiniteDuration()) --num_time_limited_;
    requests_.erase(id);
    absl::MutexLock lock(&mu_);
    live_.erase(id);
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
  seq.logprob_sum += sampled.logprob;
  seq.min_logprob = seq.num_output() == 1 ? sampled.logprob : std::min(seq.min_logprob, sampled.logprob);
  if (seq.first_token == absl::InfiniteFuture()) seq.first_token = absl::Now();
  StopChecker::Step step = seq.stop->Append(sampled.token, seq.num_output());
  // One delta object reused for every token keeps the hot path free of allocations.
  delta_.choice = seq.choice;
  delta_.token_ids.assign(1, sampled.token);
  delta_.text = std::move(step.text);
  delta_.logprobs.clear();
  if (sampled.logprobs.has_value()) delta_.logprobs.push_back(*sampled.logprobs);
  seq.sink->OnDelta(delta_);
  if (step.finish.has_value()) Finish(seq, *step.finish, std::move(step.matched_stop));
}

void Engine::BuildSampling(const StepPlan& plan) {
  sampling_.rows.clear();
  sampling_.adjustments.clear();
  for (const ScheduledSequence& s : plan.scheduled) {
    if (!s.samples()) continue;
    const Sequence& seq = *s.seq;
    const std::vector<int32_t> masked = seq.stop->MaskedTokens(seq.num_output());
    const absl::Span<const int32_t> tokens(seq.tokens);
    AppendRow({.params = &seq.request->sampling,
               .prompt = tokens.subspan(0, seq.prompt_len),
               .output = tokens.subspan(seq.prompt_len),
               .masked_tokens = masked,
               .seed = seq.seed,
               .choice = seq.choice},
              sampling_);
  }
}

void Engine::Postprocess(const StepPlan& plan, const StepSamples& samples) {
  // Which sequences sample is decided by the plan, before Advance moves num_computed.
  std::vector<Sequence*> sampling;
  for (const ScheduledSequence& s : plan.scheduled) {
    if (s.samples()) sampling.push_back(s.seq);
  }
  scheduler_.Advance(plan);
  for (size_t row = 0; row < sampling.size(); ++row) {
    Sequence& seq = *sampling[row];
    const Sampled sampled = SampledRow(samples, row, seq.request->sampling);
    if (sampled.token < 0 || sampled.token >= model_.info().vocab_size) {
      Finish(seq, FinishReason::kError, "",
             absl::InternalError(sampled.token < 0
                                     ? "no token can be sampled: every logit is NaN or -inf"
                                     : absl::StrCat("sampled token ", sampled.token,
                                                    " is outside the vocabulary")));
      continue;
    }
    EmitToken(seq, sampled);
  }
}

absl::StatusOr<bool> Engine::Step() {
  if (relay_ == nullptr) return StepHere();
  if (group_stopped_) return false;
  // Every rank ends every step with the output exchange, whatever the step did.
  absl::StatusOr<bool> did_work = StepHere();
  if (group_stopped_) AbortEverything();
  RETURN_IF_ERROR(ExchangeOutputs());
  return did_work;
}

absl::Status Engine::ExchangeOutputs() {
  const ExpertTraffic traffic = model_.expert_traffic();
  const RankLoad mine{.running = scheduler_.num_running(),
                      .waiting = scheduler_.num_waiting(),
                      .free_blocks = blocks_.num_free_blocks(),
                      .total_blocks = blocks_.num_blocks(),
                      .steps = steps_ + idle_steps_,
                      .expert_rows_sent = traffic.rows_sent,
                      .expert_rows_received = traffic.rows_received};
  ASSIGN_OR_RETURN(const std::vector<AbortOrder> finished, relay_->ExchangeOutputs(mine));
  {
    absl::MutexLock lock(&mu_);
    for (const AbortOrder& f : finished) {
      auto it = live_.find(f.request_id);
      if (it != live_.end() && it->second == f.submission) live_.erase(it);
    }
  }
  PublishStats();
  return absl::OkStatus();
}

void Engine::AbortEverything() {
  while (!requests_.empty()) FinishRequest(requests_.begin()->second, FinishReason::kAborted);
}

absl::StatusOr<bool> Engine::StepHere() {
  absl::Time t0 = absl::Now();
  RETURN_IF_ERROR(DrainInbox());
  if (group_stopped_) return false;
  ExpireTimeLimits();
  const StepPlan plan = scheduler_.Schedule();
  preemptions_ += plan.preempted.size();
  if (relay_ != nullptr) {
    // Lockstep: a forward runs on every rank or on none; a rank without tokens joins the
    // expert exchanges with zero rows.
    ASSIGN_OR_RETURN(const bool any_work, relay_->AnyWork(!plan.empty()));
    if (!any_work) return false;
    if (plan.empty()) {
      const absl::Time t1 = absl::Now();
      RETURN_IF_ERROR(model_.ForwardIdle());
      phase_times_.schedule += t1 - t0;
      phase_times_.forward += absl::Now() - t1;
      ++idle_steps_;
      return true;
    }
  }
  if (plan.empty()) {
    PublishStats();  // aborts and expiries may have freed blocks even when nothing runs
    return false;
  }
  absl::Time t1 = absl::Now();
  for (const ScheduledSequence& s : plan.scheduled) {
    if (s.seq->first_scheduled == absl::InfiniteFuture()) s.seq->first_scheduled = t1;
  }
  const StepBatch batch = BuildBatch(plan);
  BuildSampling(plan);
  absl::Time t2 = absl::Now();
  absl::StatusOr<StepSamples> samples = model_.ForwardAndSample(batch, kv_, sampling_);
  absl::Time t3 = absl::Now();
  if (!samples.ok()) {
    for (const ScheduledSequence& s : plan.scheduled) {
      Sequence& seq = *s.seq;
      if (seq.status != SequenceStatus::kFinished) Finish(seq, FinishReason::kError, "", samples.status());
    }
    return samples.status();
  }
  Postprocess(plan, *samples);
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
            .idle_steps = idle_steps_,
            .preemptions = preemptions_,
            .prefix_cache = blocks_.stats(),
            .phase_times = phase_times_};
  if (relay_ != nullptr && relay_->rank() == 0) {
    stats_.ranks = relay_->loads();
    const ExpertTraffic traffic = model_.expert_traffic();
    stats_.ranks[0] = {.running = stats_.running, .waiting = stats_.waiting,
                       .free_blocks = stats_.free_blocks, .total_blocks = stats_.total_blocks,
                       .steps = steps_ + idle_steps_, .expert_rows_sent = traffic.rows_sent,
                       .expert_rows_received = traffic.rows_received};
    stats_.running = stats_.waiting = stats_.free_blocks = stats_.total_blocks = 0;
    for (const RankLoad& load : stats_.ranks) {
      stats_.running += load.running;
      stats_.waiting += load.waiting;
      stats_.free_blocks += load.free_blocks;
      stats_.total_blocks += load.total_blocks;
    }
  }
}

absl::Status Engine::RunUntilIdle() {
  while (true) {
    ASSIGN_OR_RETURN(bool did_work, Step());
    if (!did_work && !scheduler_.has_work() && (relay_ == nullptr || relay_->num_relayed() == 0)) {
      absl::MutexLock lock(&mu_);
      if (inbox_.empty() && aborts_.empty()) break;
    }
  }
  PublishStats();
  return absl::OkStatus();
}

absl::Status Engine::RunGroupMember() {
  if (relay_ == nullptr || relay_->rank() == 0) {
    return absl::FailedPreconditionError("RunGroupMember is for ranks other than 0 of a group");
  }
  while (!group_stopped_) {
    // A failed step is logged and the group goes on: leaving would stall every other rank.
    absl::StatusOr<bool> did_work = Step();
    if (!did_work.ok()) std::cerr << "engine (rank " << relay_->rank() << "): step failed: " << did_work.status() << "\n";
  }
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
  if (relay_ != nullptr) {
    // Rank 0's stop step tells every rank to finish what it runs, and relays their finals.
    if (relay_->rank() == 0 && !group_stopped_) {
      if (absl::StatusOr<bool> s = Step(); !s.ok()) std::cerr << "engine: stop step failed: " << s.status() << "\n";
    }
    PublishStats();
    return;
  }
  // Every accepted request gets its final record, even when the engine stops under it.
  (void)DrainInbox();
  while (!requests_.empty()) FinishRequest(requests_.begin()->second, FinishReason::kAborted);
  PublishStats();
}

void Engine::Loop() {
  auto has_news = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !inbox_.empty() || !aborts_.empty();
  };
  while (true) {
    if (relay_ != nullptr) {
      if (group_stopped_) return;  // rank 0 runs the stop step before it leaves
    } else {
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

void Engine::FailEverything(const absl::Status& status) {
  for (auto& [id, state] : requests_) {
    for (auto& seq : state.choices) {
      if (seq->status == SequenceStatus::kFinished) continue;
      seq->status = SequenceStatus::kFinished;
      seq->sink->OnFinal({.choice = seq->choice, .reason = FinishReason::kError, .error = status});
    }
  }
  if (relay_ != nullptr) relay_->FailRelayed(status);
}

EngineStats Engine::GetStats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

}  // namespace moe
