// LoadModel: an MoE checkpoint on the backend asked for, behind runtime's Model interface.
//
//   ASSIGN_OR_RETURN(LoadedModel m, LoadModel("/models/olmoe", {.backend = "auto"}));
//   m.backend;   // "cuda" when this build has CUDA and a GPU is present, else "cpu"
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "moe/config.h"
#include "runtime/cpu/linear.h"
#include "runtime/dist/communicator.h"
#include "runtime/model.h"

namespace moe {

struct BackendOptions {
  std::string backend = "auto";  // auto, cpu or cuda
  // Expert parallelism over these ranks (each loads only its share of the experts); null or
  // one rank: every expert here.
  dist::Communicator* comm = nullptr;
  int32_t max_tokens = 8192;     // the largest step's tokens (the GPU sizes its buffers by it)
  int32_t max_seqs = 256;        // the largest step's sequences
  // CPU backend: what bf16 weights multiply (--cpu_gemm_inputs). The library's default is the
  // reference, f32; the programs default to bf16, as PyTorch and llama.cpp run bf16 models.
  cpu::GemmInputs gemm_inputs = cpu::GemmInputs::kF32;
};

struct LoadedModel {
  std::unique_ptr<Model> model;
  MoeConfig config;
  std::string backend;  // "cpu" or "cuda"
};

// "cpu" or "cuda" for "auto", "cpu" or "cuda"; an error naming the flag value otherwise, or
// when CUDA is asked for and this build or machine has none.
absl::StatusOr<std::string> ResolveBackend(const std::string& backend);

// "bf16" or "f32" -> the GemmInputs; an error naming --cpu_gemm_inputs otherwise.
absl::StatusOr<cpu::GemmInputs> ParseGemmInputs(const std::string& name);

absl::StatusOr<LoadedModel> LoadModel(const std::string& model_dir, const BackendOptions& options);

}  // namespace moe
