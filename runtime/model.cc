#include "runtime/model.h"

#include "absl/strings/str_cat.h"
#include "runtime/cpu/sampler.h"
#include "runtime/status_macros.h"

namespace moe {

absl::Status CheckSamplingRows(const StepBatch& batch, const SamplingBatch& sampling) {
  if (sampling.num_rows() != static_cast<int>(batch.logits_rows.size())) {
    return absl::InvalidArgumentError(absl::StrCat("the step samples ", batch.logits_rows.size(),
                                                   " logits rows but has sampling parameters for ",
                                                   sampling.num_rows()));
  }
  return absl::OkStatus();
}

absl::StatusOr<StepSamples> Model::ForwardAndSample(const StepBatch& batch, KvCache& kv,
                                                    const SamplingBatch& sampling) {
  RETURN_IF_ERROR(CheckSamplingRows(batch, sampling));
  ASSIGN_OR_RETURN(const Tensor logits, Forward(batch, kv));
  StepSamples out;
  cpu::SampleRows(logits, sampling, out);
  return out;
}

}  // namespace moe
