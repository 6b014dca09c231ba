// Backend flags that every program loading a model on the CPU shares, defined once here:
//
//   --cpu_gemm_inputs bf16|f32   what bf16 weights multiply (cpu::GemmInputs); default bf16
//
//   ASSIGN_OR_RETURN(options.gemm_inputs, GemmInputsFromFlag());
#pragma once

#include "absl/status/statusor.h"
#include "runtime/cpu/linear.h"

namespace moe {

// --cpu_gemm_inputs as a GemmInputs; an error naming the flag for anything but bf16 or f32.
absl::StatusOr<cpu::GemmInputs> GemmInputsFromFlag();

}  // namespace moe
