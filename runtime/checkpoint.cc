#include "runtime/checkpoint.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/status_macros.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

absl::StatusOr<json> ReadIndex(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream text;
  text << in.rdbuf();
  try {
    json index = json::parse(text.str());
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": expected an object with weight_map"));
    }
    return index;
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
}

}  // namespace

absl::StatusOr<Checkpoint> Checkpoint::Open(const std::string& dir) {
  Checkpoint ckpt;
  ckpt.dir_ = dir;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index_path)) {
    ASSIGN_OR_RETURN(json index, ReadIndex(index_path.string()));
    std::map<std::string, std::shared_ptr<const SafetensorsFile>> shards;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path.string(), ": weight_map[\"", name, "\"] is not a file name"));
      }
      const std::string shard_name = file.get<std::string>();
      if (shard_name.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(index_path.string(), ": shard name \"",
                                                       shard_name, "\" must be a plain file name"));
      }
      auto& shard = shards[shard_name];
      if (shard == nullptr) {
        ASSIGN_OR_RETURN(shard, SafetensorsFile::Open((fs::path(dir) / shard_name).string()));
      }
      if (!shard->Contains(name)) {
        return absl::NotFoundError(absl::StrCat(index_path.string(), " places \"", name,
                                                "\" in ", shard_name, ", which lacks it"));
      }
      ckpt.where_[name] = shard;
    }
  } else if (fs::exists(single)) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single.string()));
    for (const std::string& name : file->names()) ckpt.where_[name] = file;
  } else {
    return absl::NotFoundError(absl::StrCat(
        dir, ": no model.safetensors or model.safetensors.index.json"));
  }
  return ckpt;
}

absl::StatusOr<Tensor> Checkpoint::Get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": missing tensor \"", name, "\""));
  }
  return it->second->Get(name);
}

void Checkpoint::DropPages(const std::string& name) const {
  auto it = where_.find(name);
  if (it != where_.end()) it->second->DropPages(name);
}

std::string Checkpoint::FileOf(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? dir_ : it->second->path();
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

}  // namespace moe
