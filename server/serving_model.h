// ServingModel: what the server serves, loaded once: the model on its backend, its tokenizer
// and chat template (both optional), and the engine over them with its own thread.
//
//   ASSIGN_OR_RETURN(auto serving, ServingModel::Load(options));
//   serving->engine().Submit(request, sink);
//   serving->Stop();   // every unfinished request ends with kAborted
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "moe/backend.h"
#include "runtime/engine/engine.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"

namespace moe::server {

struct ServingModelOptions {
  std::string model_dir;
  std::string tokenizer_dir;  // empty: the model directory, if it has a tokenizer.json
  std::string backend = "auto";  // auto, cpu or cuda (moe/backend.h)
  cpu::GemmInputs gemm_inputs = cpu::GemmInputs::kBF16;  // the CPU backend's (moe/backend.h)
  // Expert parallelism: the ranks the experts are spread over (engine.group is set from it).
  // Rank 0's engine runs on its own thread; the other ranks call RunGroupMember.
  dist::Communicator* comm = nullptr;
  absl::Duration load_timeout = absl::Minutes(30);  // how long ranks wait for each other to load
  EngineOptions engine;  // text_streams is filled in from the tokenizer
};

class ServingModel {
 public:
  static absl::StatusOr<std::unique_ptr<ServingModel>> Load(const ServingModelOptions& options);
  ~ServingModel() { Stop(); }

  Engine& engine() { return *engine_; }
  const Model& model() const { return *model_; }
  const MoeConfig& config() const { return config_; }
  const text::Tokenizer* tokenizer() const { return tokenizer_.get(); }    // nullptr: none
  const text::ChatTemplate* chat_template() const { return chat_.get(); }  // nullptr: none
  const std::string& model_dir() const { return model_dir_; }
  const std::string& backend() const { return backend_; }
  int num_kv_blocks() const { return num_kv_blocks_; }
  int block_size() const { return block_size_; }

  void Stop() {
    if (engine_ != nullptr) engine_->Stop();
  }
  // Ranks other than 0: runs this rank's engine until rank 0 stops the group.
  absl::Status RunGroupMember() { return engine_->RunGroupMember(); }

 private:
  ServingModel() = default;

  std::string model_dir_;
  std::string backend_;
  int num_kv_blocks_ = 0;
  int block_size_ = 0;
  std::unique_ptr<Model> model_;
  MoeConfig config_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<text::ChatTemplate> chat_;
  std::unique_ptr<Engine> engine_;  // last: stopped and destroyed before what it uses
};

}  // namespace moe::server
