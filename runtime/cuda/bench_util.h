// Measuring on the GPU: event timers and the ceilings a benchmark compares against, both
// measured in the same run (a figure is only as good as the ceiling beside it).
//
//   ASSIGN_OR_RETURN(double us, TimeOnStream(stream, 20, [&] { return RunLayer(); }));
//   ASSIGN_OR_RETURN(Ceilings c, MeasureCeilings(stream));
#pragma once

#include <functional>

#include <cuda_runtime.h>

#include "absl/status/statusor.h"

namespace moe::cuda {

// Mean microseconds of `work` (which enqueues on `stream`) over `iterations` runs, after
// two warm-up runs, timed with CUDA events around all the runs.
absl::StatusOr<double> TimeOnStream(cudaStream_t stream, int iterations,
                                    const std::function<absl::Status()>& work);

struct Ceilings {
  double copy_gb_per_s = 0;     // device-to-device copy: (read + write) bytes / time
  double gemm_tflop_per_s = 0;  // cuBLAS bf16 GEMM 8192^3, fp32 accumulation
};
absl::StatusOr<Ceilings> MeasureCeilings(cudaStream_t stream);

absl::Status Synchronize(cudaStream_t stream);

}  // namespace moe::cuda
