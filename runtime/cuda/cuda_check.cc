#include "runtime/cuda/cuda_check.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace moe::cuda {

absl::Status CudaError(cudaError_t error, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error, so the next launch check does not see it
  return absl::InternalError(absl::StrCat("CUDA error at ", file, ":", line, ": ", expr, ": ",
                                          cudaGetErrorName(error), " (", cudaGetErrorString(error),
                                          ")"));
}

void CudaFatal(cudaError_t error, const char* expr, const char* file, int line) {
  std::fprintf(stderr, "%s\n", CudaError(error, expr, file, line).ToString().c_str());
  std::abort();
}

}  // namespace moe::cuda
