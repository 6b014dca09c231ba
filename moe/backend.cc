#include "moe/backend.h"

#include "absl/strings/str_cat.h"
#include "moe/moe_model.h"
#include "runtime/status_macros.h"

#ifdef MOE_HAVE_CUDA
#include "moe/cuda/cuda_moe_model.h"
#include "runtime/cuda/device.h"
#endif

namespace moe {

absl::StatusOr<std::string> ResolveBackend(const std::string& backend) {
  if (backend == "cpu") return std::string("cpu");
  if (backend != "auto" && backend != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--backend must be auto, cpu or cuda, got \"", backend, "\""));
  }
#ifdef MOE_HAVE_CUDA
  if (cuda::HasDevice()) return std::string("cuda");
  if (backend == "cuda") return absl::FailedPreconditionError(absl::StrCat("--backend cuda: ", cuda::NoDeviceReason()));
#else
  if (backend == "cuda") {
    return absl::FailedPreconditionError("--backend cuda: this build has no CUDA backend (nvcc was not found)");
  }
#endif
  return std::string("cpu");
}

absl::StatusOr<cpu::GemmInputs> ParseGemmInputs(const std::string& name) {
  if (name == "bf16") return cpu::GemmInputs::kBF16;
  if (name == "f32") return cpu::GemmInputs::kF32;
  return absl::InvalidArgumentError(absl::StrCat("--cpu_gemm_inputs must be bf16 or f32, not '", name, "'"));
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& model_dir, const BackendOptions& options) {
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.backend, ResolveBackend(options.backend));
#ifdef MOE_HAVE_CUDA
  if (loaded.backend == "cuda") {
    if (options.comm != nullptr && options.comm->Size() > 1) {
      // One GPU per rank of a host (NCCL refuses two ranks on one GPU, naming both).
      RETURN_IF_ERROR(cuda::UseDevice(options.comm->LocalRank() % cuda::DeviceCount()));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<cuda::CudaMoeModel> model,
                     cuda::CudaMoeModel::Load(model_dir, {.max_tokens = options.max_tokens,
                                                          .max_seqs = options.max_seqs,
                                                          .comm = options.comm}));
    loaded.config = model->config();
    loaded.model = std::move(model);
    return loaded;
  }
#endif
  ASSIGN_OR_RETURN(std::unique_ptr<MoeModel> model, MoeModel::Load(model_dir, {.comm = options.comm, .gemm_inputs = options.gemm_inputs}));
  loaded.config = model->config();
  loaded.model = std::move(model);
  return loaded;
}

}  // namespace moe
