#include "fuzz/fuzz_support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "tools/random_model.h"

namespace moe::fuzz {

std::string TokenizerDir(const std::string& name) {
  const char* source = std::getenv("MOE_SOURCE_DIR");
  return std::string(source != nullptr ? source : MOE_SOURCE_DIR) + "/tests/data/tokenizers/" + name;
}

const server::ServingModel& TinyServingModel() {
  static const server::ServingModel* serving = [] {
    const std::string dir = std::filesystem::temp_directory_path() / ("moe_fuzz_model." + std::to_string(getpid()));
    nlohmann::json config = TinyQwen3Config();
    config["vocab_size"] = 1554;  // the Qwen2 test tokenizer's
    config["eos_token_id"] = 2;
    absl::Status written = WriteRandomModel(config, {.dtype = DType::kF32, .seed = 1}, dir).status();
    for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
      std::error_code ec;
      std::filesystem::copy_file(TokenizerDir("qwen2") + "/" + file, dir + "/" + file,
                                 std::filesystem::copy_options::overwrite_existing, ec);
      if (ec && written.ok()) written = absl::NotFoundError(ec.message());
    }
    absl::StatusOr<std::unique_ptr<server::ServingModel>> loaded =
        written.ok() ? server::ServingModel::Load({.model_dir = dir, .backend = "cpu"})
                     : absl::StatusOr<std::unique_ptr<server::ServingModel>>(written);
    std::filesystem::remove_all(dir);
    if (!loaded.ok()) {
      std::fprintf(stderr, "fuzz: cannot make the tiny model: %s\n", loaded.status().ToString().c_str());
      std::abort();
    }
    return loaded->release();
  }();
  return *serving;
}

}  // namespace moe::fuzz
