#include "moe/backend_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, cpu_gemm_inputs, "bf16",
          "CPU backend: what bf16 weights multiply, bf16 (activations rounded, as PyTorch and llama.cpp run "
          "bf16 models) or f32 (the reference)");

namespace moe {

absl::StatusOr<cpu::GemmInputs> GemmInputsFromFlag() {
  const std::string name = absl::GetFlag(FLAGS_cpu_gemm_inputs);
  if (name == "bf16") return cpu::GemmInputs::kBF16;
  if (name == "f32") return cpu::GemmInputs::kF32;
  return absl::InvalidArgumentError(absl::StrCat("--cpu_gemm_inputs must be bf16 or f32, not '", name, "'"));
}

}  // namespace moe
