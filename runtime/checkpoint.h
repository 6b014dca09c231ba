// Checkpoint: the tensors of a Hugging Face model directory, from `model.safetensors` or
// from the shards listed in `model.safetensors.index.json`.
//
// Every file is opened and validated up front; for a sharded checkpoint each tensor the
// index names must be present in the shard it names.
//
//   ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open("/models/qwen3"));
//   ASSIGN_OR_RETURN(Tensor w, ckpt.Get("model.embed_tokens.weight"));
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/safetensors.h"

namespace moe {

class Checkpoint {
 public:
  static absl::StatusOr<Checkpoint> Open(const std::string& dir);

  bool Contains(const std::string& name) const { return where_.count(name) > 0; }
  absl::StatusOr<Tensor> Get(const std::string& name) const;
  // For a tensor whose data was copied out: its file pages leave this process's resident
  // memory (they are read back from the page cache if it is read again).
  void DropPages(const std::string& name) const;
  // The file holding `name` (for error messages), or the directory if none does.
  std::string FileOf(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::string dir_;
  std::map<std::string, std::shared_ptr<const SafetensorsFile>> where_;
};

}  // namespace moe
