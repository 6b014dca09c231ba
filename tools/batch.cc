// moe-batch: offline generation over a JSONL file, with the engine in this process at full
// batch. Each input line is a request in OpenAI's Batch format,
//
//   {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
//
// or the plain form {"id": "q1", "prompt" | "messages": ..., sampling fields...}. Each
// result is a line of OpenAI's batch output, {"id", "custom_id", "response": {"status_code",
// "request_id", "body"}, "error"}, appended to --output as it completes; failed lines (bad
// input, with their line number, or a failed generation) go to --errors in the same shape.
//
// Nothing is lost and nothing is done twice: results are flushed as they come and synced
// every second; --resume skips custom_ids already written (to either file) and drops a last
// line that a kill cut short. At most --max_inflight requests are in memory, whatever the
// input's length. A request without a seed gets one derived from its custom_id, written in
// its line, so a rerun gives the same tokens.
//
//   moe-batch --model DIR --input requests.jsonl --output results.jsonl [--resume]
//   mpirun -np 4 moe-batch ...   # experts over 4 ranks; rank 0 reads and writes
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "runtime/command_line.h"
#include "runtime/dist/communicator.h"
#include "runtime/status_macros.h"
#include "tools/batch_line.h"
#include "server/openai_request.h"
#include "server/openai_response.h"
#include "server/serving_model.h"

ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json + safetensors)");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer directory (default: the model's, if it has one)");
ABSL_FLAG(std::string, backend, "auto", "auto (the GPU when there is one), cpu or cuda");
ABSL_FLAG(std::string, cpu_gemm_inputs, "bf16",
          "CPU backend: what bf16 weights multiply, bf16 (activations rounded, as PyTorch and llama.cpp run bf16 models) or f32 (the reference)");
ABSL_FLAG(std::string, input, "", "requests, one JSON object per line");
ABSL_FLAG(std::string, output, "", "results, appended one line each as they complete");
ABSL_FLAG(std::string, errors, "", "failed lines (default: the output's name + .errors.jsonl)");
ABSL_FLAG(bool, resume, false, "skip custom_ids already in the output or error file");
ABSL_FLAG(bool, strict, false, "stop at the first malformed line (after finishing what runs)");
ABSL_FLAG(int, max_inflight, 0, "requests in memory at once (0: as many as the KV cache holds)");
ABSL_FLAG(std::string, served_model_name, "",
          "the model's name, which request bodies may give (default: the model directory's base name)");
ABSL_FLAG(int, max_batched_tokens, 2048, "token budget of one engine step");
ABSL_FLAG(int, max_seqs, 256, "sequences running at once");
ABSL_FLAG(int, kv_blocks, 0, "KV cache blocks (0: --kv_cache_memory)");
ABSL_FLAG(int64_t, kv_cache_memory_mib, 1024, "KV cache size in MiB, when --kv_blocks is 0");
ABSL_FLAG(int, block_size, 16, "KV cache block size in tokens (a power of two)");
ABSL_FLAG(absl::Duration, collective_timeout, absl::Seconds(60),
          "under mpirun: a step still waiting on a rank after this long ends every rank");

namespace moe::batch {
namespace {

using json = nlohmann::ordered_json;
using server::Endpoint;
using server::OpenAiRequest;
using server::OpenAiResponse;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// One line's result, appended and flushed; synced at most every second, and at Close.
class ResultFile {
 public:
  static absl::StatusOr<std::unique_ptr<ResultFile>> Open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
    return std::unique_ptr<ResultFile>(new ResultFile(fd, path));
  }
  ~ResultFile() { Close(); }

  absl::Status Append(const json& line) {
    const std::string text = Dump(line) + "\n";
    for (size_t done = 0; done < text.size();) {  // one write() in practice
      const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return absl::InternalError(absl::StrCat("cannot write ", path_, ": ", strerror(errno)));
      done += n;
    }
    if (absl::Now() - last_sync_ >= absl::Seconds(1)) return Sync();
    return absl::OkStatus();
  }
  absl::Status Sync() {
    last_sync_ = absl::Now();
    if (::fdatasync(fd_) != 0) return absl::InternalError(absl::StrCat("cannot sync ", path_, ": ", strerror(errno)));
    return absl::OkStatus();
  }
  void Close() {
    if (fd_ < 0) return;
    (void)Sync();
    ::close(fd_);
    fd_ = -1;
  }

 private:
  ResultFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
  absl::Time last_sync_ = absl::Now();
};

// Resume: what a file already has, after dropping a last line that a kill cut short.
struct Done {
  absl::flat_hash_set<uint64_t> ids;    // custom_ids, as 64-bit hashes (8 bytes a line)
  absl::flat_hash_set<int64_t> lines;  // input lines refused before they had a custom_id
};

absl::Status ReadDone(const std::string& path, Done& done) {
  if (!std::filesystem::exists(path)) return absl::OkStatus();
  std::ifstream in(path, std::ios::binary);
  std::string line;
  int64_t good_end = 0, number = 0;
  while (std::getline(in, line)) {
    ++number;
    const bool complete = !in.eof();  // getline stopped at a newline
    const json j = json::parse(line, nullptr, false);
    if (!complete || j.is_discarded() || !j.is_object()) {
      if (in.peek() != EOF || complete) {
        return absl::DataLossError(absl::StrCat(path, " line ", number, " is not a result line; it is not ",
                                                "the last, so the file was not cut short by a kill: fix it by hand"));
      }
      break;  // the cut-short last line
    }
    if (j.contains("custom_id") && j["custom_id"].is_string()) {
      done.ids.insert(Fnv1a(j["custom_id"]));
    } else if (j.contains("line") && j["line"].is_number_integer()) {
      done.lines.insert(j["line"].get<int64_t>());
    }
    good_end = in.tellg();
  }
  if (const int64_t size = std::filesystem::file_size(path); size > good_end) {
    std::fprintf(stderr, "moe-batch: %s ends in a line cut short (%lld bytes); dropping it\n", path.c_str(),
                 static_cast<long long>(size - good_end));
    std::filesystem::resize_file(path, good_end);
  }
  return absl::OkStatus();
}

struct Counts {
  int64_t ok = 0, failed = 0, skipped = 0, prompt_tokens = 0, completion_tokens = 0;
};

// One input line in flight: its request, the response it builds, and where it goes.
struct Job {
  int64_t line = 0;
  std::string custom_id;
  uint64_t seed = 0;
  OpenAiRequest request;
  std::unique_ptr<OpenAiResponse> response;
  absl::Status error;  // a choice that failed
};

// The jobs the engine has finished, handed from the engine thread to the writer.
class Finished {
 public:
  void Push(std::shared_ptr<Job> job) {
    absl::MutexLock lock(&mu_);
    jobs_.push_back(std::move(job));
  }
  // Waits up to `timeout` for one.
  std::shared_ptr<Job> Pop(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto any = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !jobs_.empty(); };
    if (!mu_.AwaitWithTimeout(absl::Condition(&any), timeout)) return nullptr;
    std::shared_ptr<Job> job = std::move(jobs_.front());
    jobs_.pop_front();
    return job;
  }

 private:
  absl::Mutex mu_;
  std::deque<std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
};

// Feeds one prompt's output into its job's response (choices numbered prompt * n + choice).
class JobSink final : public OutputSink {
 public:
  JobSink(std::shared_ptr<Job> job, int first_choice, absl::Mutex* mu, Finished* finished)
      : job_(std::move(job)), first_choice_(first_choice), mu_(mu), finished_(finished) {}
  void OnDelta(const OutputDelta& delta) override {
    absl::MutexLock lock(mu_);
    job_->response->AddDelta(first_choice_ + delta.choice, delta);
  }
  void OnFinal(const FinalOutput& final) override {
    bool done;
    {
      absl::MutexLock lock(mu_);
      job_->response->AddFinal(first_choice_ + final.choice, final);
      if (final.reason == FinishReason::kError && job_->error.ok()) job_->error = final.error;
      if (final.reason == FinishReason::kAborted && job_->error.ok()) {
        job_->error = absl::AbortedError("the request was aborted");
      }
      done = job_->response->finished();
    }
    if (done) finished_->Push(job_);
  }

 private:
  const std::shared_ptr<Job> job_;
  const int first_choice_;
  absl::Mutex* mu_;  // the responses' lock (the engine thread calls, the writer reads)
  Finished* finished_;
};

json ErrorLine(int64_t line, const std::string& custom_id, const server::ApiError& error) {
  json out = {{"id", absl::StrFormat("batch_req_%016x", Fnv1a(absl::StrCat(custom_id, "#", line)))},
              {"custom_id", custom_id.empty() ? json(nullptr) : json(custom_id)},
              {"line", line},
              {"response", {{"status_code", error.status},
                            {"request_id", absl::StrCat("line-", line)},
                            {"body", json::parse(server::ErrorJson(error))}}},
              {"error", {{"code", error.code.empty() ? error.type : error.code},
                         {"message", absl::StrCat("line ", line, ": ", error.message)}}}};
  return out;
}

class Runner {
 public:
  Runner(server::ServingModel& serving, std::string model_name, ResultFile& output, ResultFile& errors)
      : serving_(serving), model_name_(std::move(model_name)), output_(output), errors_(errors) {}
  // The engine calls into this runner's sinks until it stops: it stops first, on every way
  // out (a failed write returns early, with requests still running).
  ~Runner() { serving_.Stop(); }

  // Turns one input line into a job, or an error naming what is wrong.
  absl::StatusOr<std::shared_ptr<Job>> Parse(const std::string& text, int64_t line, std::string* custom_id) {
    ASSIGN_OR_RETURN(BatchLine parsed, ParseBatchLine(text, model_name_, serving_, custom_id));
    auto job = std::make_shared<Job>();
    job->line = line;
    job->custom_id = std::move(parsed.custom_id);
    job->seed = parsed.seed;
    job->request = std::move(parsed.request);
    job->response = std::make_unique<OpenAiResponse>(
        job->request,
        server::OpenAiResponseOptions{
            .id = absl::StrCat(parsed.endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-", "batch-", line),
            .model = model_name_,
            .created = absl::ToUnixSeconds(absl::Now()),
            .tokenizer = serving_.tokenizer()});
    return job;
  }

  // Submits every prompt of `job`. A refusal of the first writes the error line at once; of
  // a later one (a prompt too long for the KV cache), fails the job's remaining choices and
  // aborts its running prompts, whose finals then finish it.
  absl::Status Submit(const std::shared_ptr<Job>& job) {
    const int n = job->request.prompts[0].sampling.n;
    const size_t prompts = job->request.prompts.size();
    for (size_t p = 0; p < prompts; ++p) {
      Request r = job->request.prompts[p];
      r.id = absl::StrCat("line-", job->line, "-", p);
      const absl::Status submitted =
          serving_.engine().Submit(std::move(r), std::make_shared<JobSink>(job, p * n, &mu_, &finished_));
      if (submitted.ok()) continue;
      if (p == 0) return WriteError(job->line, job->custom_id, submitted);
      ++inflight_;
      absl::MutexLock lock(&mu_);
      job->error = submitted;
      for (size_t c = p * n; c < prompts * n; ++c) {
        job->response->AddFinal(c, {.reason = FinishReason::kError, .error = submitted});
      }
      for (size_t q = 0; q < p; ++q) serving_.engine().Abort(absl::StrCat("line-", job->line, "-", q));
      if (job->response->finished()) finished_.Push(job);  // the earlier prompts had ended already
      return absl::OkStatus();
    }
    ++inflight_;
    return absl::OkStatus();
  }

  absl::Status WriteError(int64_t line, const std::string& custom_id, const absl::Status& status) {
    ++counts_.failed;
    return errors_.Append(ErrorLine(line, custom_id, server::ApiErrorOf(status)));
  }

  // Writes what has finished, waiting up to `timeout` for the first.
  absl::Status Drain(absl::Duration timeout) {
    for (std::shared_ptr<Job> job = finished_.Pop(timeout); job != nullptr;
         job = finished_.Pop(absl::ZeroDuration())) {
      --inflight_;
      absl::MutexLock lock(&mu_);
      if (!job->error.ok()) {
        RETURN_IF_ERROR(WriteError(job->line, job->custom_id, job->error));
        continue;
      }
      json body = job->response->Body();
      const json& usage = body["usage"];
      counts_.prompt_tokens += usage["prompt_tokens"].get<int64_t>();
      counts_.completion_tokens += usage["completion_tokens"].get<int64_t>();
      ++counts_.ok;
      const std::string request_id = body["id"];
      RETURN_IF_ERROR(output_.Append({{"id", absl::StrFormat("batch_req_%016x", Fnv1a(job->custom_id))},
                                      {"custom_id", job->custom_id},
                                      {"seed", job->seed},
                                      {"response", {{"status_code", 200},
                                                    {"request_id", request_id},
                                                    {"body", std::move(body)}}},
                                      {"error", nullptr}}));
    }
    return absl::OkStatus();
  }

  int inflight() const { return inflight_; }
  Counts& counts() { return counts_; }

 private:
  server::ServingModel& serving_;
  const std::string model_name_;
  ResultFile& output_;
  ResultFile& errors_;
  absl::Mutex mu_;  // every job's response
  Finished finished_;
  int inflight_ = 0;
  Counts counts_;
};

// Lines in `path`, for the progress bar's total.
int64_t CountLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int64_t lines = 0;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof(buffer)) || in.gcount() > 0) {
    lines += std::count(buffer, buffer + in.gcount(), '\n');
  }
  return lines;
}

class Progress {
 public:
  explicit Progress(int64_t total) : total_(total), tty_(isatty(STDERR_FILENO)) {
    if (!tty_) last_ = start_;  // plain lines every 10 s, the first after 10 s
  }
  void Update(const Counts& c, bool force = false) {
    const absl::Time now = absl::Now();
    if (!force && now - last_ < (tty_ ? absl::Milliseconds(200) : absl::Seconds(10))) return;
    last_ = now;
    const double seconds = absl::ToDoubleSeconds(now - start_);
    const int64_t done = c.ok + c.failed + c.skipped;
    const double tokens_per_s = seconds > 0 ? c.completion_tokens / seconds : 0;
    if (!tty_) {
      std::fprintf(stderr, "moe-batch: %lld done (%lld failed), %.0f tokens/s, %.0f s\n",
                   static_cast<long long>(done), static_cast<long long>(c.failed), tokens_per_s, seconds);
      return;
    }
    const double fraction = total_ > 0 ? std::min(1.0, double(done) / total_) : 0;
    const int width = 30, filled = static_cast<int>(fraction * width);
    const double rate = seconds > 0 ? (c.ok + c.failed) / seconds : 0;
    const double eta = rate > 0 ? (total_ - done) / rate : 0;
    std::fprintf(stderr, "\r[%s%s] %lld/%lld %5.1f%%  %.0f tokens/s  ETA %.0fs   ",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 static_cast<long long>(done), static_cast<long long>(total_), 100 * fraction, tokens_per_s, eta);
    if (force) std::fprintf(stderr, "\n");
  }

 private:
  const int64_t total_;
  const bool tty_;
  const absl::Time start_ = absl::Now();
  absl::Time last_ = absl::InfinitePast();
};

absl::StatusOr<server::ServingModelOptions> ModelOptions(dist::Communicator& comm) {
  server::ServingModelOptions o;
  o.model_dir = absl::GetFlag(FLAGS_model);
  if (o.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  o.tokenizer_dir = absl::GetFlag(FLAGS_tokenizer);
  o.backend = absl::GetFlag(FLAGS_backend);
  ASSIGN_OR_RETURN(o.gemm_inputs, ParseGemmInputs(absl::GetFlag(FLAGS_cpu_gemm_inputs)));
  o.comm = &comm;
  EngineOptions& e = o.engine;
  e.scheduler.max_num_batched_tokens = absl::GetFlag(FLAGS_max_batched_tokens);
  e.scheduler.max_num_seqs = absl::GetFlag(FLAGS_max_seqs);
  e.block_size = absl::GetFlag(FLAGS_block_size);
  e.num_kv_blocks = absl::GetFlag(FLAGS_kv_blocks);
  if (e.num_kv_blocks <= 0) e.kv_cache_bytes = absl::GetFlag(FLAGS_kv_cache_memory_mib) << 20;
  return o;
}

absl::Status Run(dist::Communicator& comm) {
  ASSIGN_OR_RETURN(server::ServingModelOptions options, ModelOptions(comm));
  if (comm.Rank() != 0) {  // a rank of an expert-parallel group: step with rank 0
    ASSIGN_OR_RETURN(std::unique_ptr<server::ServingModel> member, server::ServingModel::Load(options));
    return member->RunGroupMember();
  }
  const std::string input = absl::GetFlag(FLAGS_input), output = absl::GetFlag(FLAGS_output);
  if (input.empty() || output.empty()) return absl::InvalidArgumentError("--input and --output are required");
  std::string errors = absl::GetFlag(FLAGS_errors);
  if (errors.empty()) {
    errors = output;
    if (errors.size() > 6 && errors.substr(errors.size() - 6) == ".jsonl") errors.resize(errors.size() - 6);
    errors += ".errors.jsonl";
  }
  std::ifstream in(input);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --input ", input));
  Done done;
  if (absl::GetFlag(FLAGS_resume)) {
    RETURN_IF_ERROR(ReadDone(output, done));
    RETURN_IF_ERROR(ReadDone(errors, done));
  } else if ((std::filesystem::exists(output) && std::filesystem::file_size(output) > 0)) {
    return absl::AlreadyExistsError(absl::StrCat(output, " already has results: pass --resume to go on with it, ",
                                                 "or remove it"));
  }
  std::string name = absl::GetFlag(FLAGS_served_model_name);
  if (name.empty()) name = std::filesystem::path(options.model_dir).lexically_normal().filename().string();
  if (name.empty()) name = std::filesystem::path(options.model_dir).lexically_normal().parent_path().filename().string();

  ASSIGN_OR_RETURN(std::unique_ptr<server::ServingModel> serving, server::ServingModel::Load(options));
  ASSIGN_OR_RETURN(std::unique_ptr<ResultFile> out, ResultFile::Open(output));
  ASSIGN_OR_RETURN(std::unique_ptr<ResultFile> err, ResultFile::Open(errors));
  int max_inflight = absl::GetFlag(FLAGS_max_inflight);
  if (max_inflight <= 0) max_inflight = serving->num_kv_blocks();  // each request holds a block at least
  Runner runner(*serving, name, *out, *err);
  Progress progress(isatty(STDERR_FILENO) ? CountLines(input) : 0);
  const absl::Time start = absl::Now();
  std::string text;
  int64_t line = 0;
  bool stop = false;
  absl::Status first_bad;
  while (!stop && std::getline(in, text)) {
    ++line;
    if (text.empty() || text.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string custom_id;
    absl::StatusOr<std::shared_ptr<Job>> job = runner.Parse(text, line, &custom_id);
    if (custom_id.empty() ? done.lines.contains(line) : done.ids.contains(Fnv1a(custom_id))) {
      ++runner.counts().skipped;
      continue;
    }
    if (!job.ok()) {
      RETURN_IF_ERROR(runner.WriteError(line, custom_id, job.status()));
      if (absl::GetFlag(FLAGS_strict)) {
        first_bad = absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", job.status().message()));
        stop = true;
      }
      continue;
    }
    RETURN_IF_ERROR(runner.Submit(*job));
    while (runner.inflight() >= max_inflight) RETURN_IF_ERROR(runner.Drain(absl::Milliseconds(100)));
    RETURN_IF_ERROR(runner.Drain(absl::ZeroDuration()));
    progress.Update(runner.counts());
  }
  while (runner.inflight() > 0) {  // everything accepted is written, --strict or not
    RETURN_IF_ERROR(runner.Drain(absl::Milliseconds(100)));
    progress.Update(runner.counts());
  }
  out->Close();
  err->Close();
  progress.Update(runner.counts(), /*force=*/true);
  serving->Stop();
  const Counts& c = runner.counts();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::fprintf(stderr,
               "moe-batch: %lld requests written, %lld failed, %lld skipped (already done); %lld prompt + "
               "%lld completion tokens in %.1f s: %.1f requests/s, %.0f completion tokens/s; peak RSS %.0f MiB\n",
               static_cast<long long>(c.ok), static_cast<long long>(c.failed), static_cast<long long>(c.skipped),
               static_cast<long long>(c.prompt_tokens), static_cast<long long>(c.completion_tokens), seconds,
               (c.ok + c.failed) / seconds, c.completion_tokens / seconds, usage.ru_maxrss / 1024.0);
  return first_bad;
}

}  // namespace
}  // namespace moe::batch

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv,
                        "Offline generation over a JSONL file: moe-batch --model DIR --input IN.jsonl "
                        "--output OUT.jsonl [--resume]");
  absl::StatusOr<std::unique_ptr<moe::dist::Communicator>> comm =
      moe::dist::MakeCommunicator({.timeout = absl::GetFlag(FLAGS_collective_timeout)});
  if (!comm.ok()) {
    std::fprintf(stderr, "moe-batch: %s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  const absl::Status status = moe::batch::Run(**comm);
  if (!status.ok()) {
    std::fprintf(stderr, "moe-batch: %s\n", std::string(status.message()).c_str());
    if ((*comm)->Size() > 1) (*comm)->Abort(absl::StrCat("moe-batch: ", status.message()));
    return 1;
  }
  return 0;
}
