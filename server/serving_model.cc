// ServingModel (see serving_model.h).
#include "server/serving_model.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "runtime/engine/detokenizer_stream.h"
#include "runtime/status_macros.h"
#include "server/log.h"

namespace moe::server {
namespace {

// The tokenizer directory to use, or "" when there is none.
std::string TokenizerDir(const ServingModelOptions& options) {
  if (!options.tokenizer_dir.empty()) return options.tokenizer_dir;
  const std::filesystem::path own = std::filesystem::path(options.model_dir) / "tokenizer.json";
  return std::filesystem::exists(own) ? options.model_dir : "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServingModel>> ServingModel::Load(
    const ServingModelOptions& options) {
  std::unique_ptr<ServingModel> serving(new ServingModel());
  serving->model_dir_ = options.model_dir;
  ASSIGN_OR_RETURN(LoadedModel loaded,
                   LoadModel(options.model_dir, {.backend = options.backend,
                                                 .comm = options.comm,
                                                 .max_tokens = options.engine.scheduler.max_num_batched_tokens,
                                                 .max_seqs = options.engine.scheduler.max_num_seqs,
                                                 .gemm_inputs = options.gemm_inputs}));
  serving->model_ = std::move(loaded.model);
  serving->config_ = std::move(loaded.config);
  serving->backend_ = std::move(loaded.backend);
  const ModelInfo& info = serving->model_->info();
  EngineOptions engine_options = options.engine;
  engine_options.group = options.comm;

  if (const std::string dir = TokenizerDir(options); !dir.empty()) {
    ASSIGN_OR_RETURN(serving->tokenizer_, text::Tokenizer::FromDirectory(dir));
    if (serving->tokenizer_->vocab_size() > info.vocab_size) {
      Log(LogLevel::kWarning, absl::StrCat("the tokenizer has ", serving->tokenizer_->vocab_size(),
                                           " ids, the model ", info.vocab_size,
                                           ": text that encodes past the model's"
                                           " vocabulary is refused"));
    }
    absl::StatusOr<text::ChatTemplate> chat =
        text::ChatTemplate::FromConfig(serving->tokenizer_->config());
    if (chat.ok()) {
      serving->chat_ = std::make_unique<text::ChatTemplate>(*std::move(chat));
    } else if (!absl::IsNotFound(chat.status())) {
      return chat.status();
    }
    engine_options.text_streams = DetokenizerStreams(*serving->tokenizer_);
  }
  ASSIGN_OR_RETURN(serving->engine_, Engine::Create(*serving->model_, engine_options));
  serving->block_size_ = engine_options.block_size;
  serving->num_kv_blocks_ = serving->engine_->GetStats().total_blocks;
  if (options.comm != nullptr && options.comm->Size() > 1) {
    // The group steps together from the first step on: wait until every rank has loaded.
    RETURN_IF_ERROR(options.comm->Barrier(options.load_timeout));
    if (options.comm->Rank() != 0) return serving;  // it runs RunGroupMember
  }
  serving->engine_->Start();
  return serving;
}

}  // namespace moe::server
