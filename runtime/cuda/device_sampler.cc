#include "runtime/cuda/device_sampler.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/status_macros.h"

namespace moe::cuda {
namespace {

// The rows follow the header in the params buffer, at this offset.
constexpr size_t kRowsOffset = (sizeof(DeviceSamplingParams) + 63) / 64 * 64;

absl::StatusOr<DeviceTensor> DeviceBytes(size_t bytes) {
  return DeviceTensor::Empty(DType::kI32, {static_cast<int64_t>(std::max<size_t>((bytes + 3) / 4, 1))});
}

}  // namespace

absl::StatusOr<DeviceSampler> DeviceSampler::Create(const DeviceSamplerCapacity& capacity) {
  if (capacity.max_rows < 1 || capacity.vocab_size < 1 || capacity.max_top_logprobs < 0) {
    return absl::InvalidArgumentError("a device sampler needs at least one row and one token");
  }
  DeviceSampler s;
  s.capacity_ = capacity;
  const size_t rows = capacity.max_rows;
  const size_t params_bytes = kRowsOffset + rows * sizeof(RowSampling);
  const size_t top_bytes = rows * capacity.max_top_logprobs * sizeof(TokenLogprob);
  ASSIGN_OR_RETURN(s.params_, DeviceBytes(params_bytes));
  ASSIGN_OR_RETURN(s.results_, DeviceBytes(rows * sizeof(DeviceSample)));
  ASSIGN_OR_RETURN(s.top_, DeviceBytes(top_bytes));
  ASSIGN_OR_RETURN(s.params_staging_, PinnedBuffer::Create(params_bytes));
  ASSIGN_OR_RETURN(s.results_host_, PinnedBuffer::Create(rows * sizeof(DeviceSample)));
  ASSIGN_OR_RETURN(s.top_host_, PinnedBuffer::Create(top_bytes));
  RETURN_IF_ERROR(s.ReserveAdjustments(1024));
  return s;
}

bool DeviceSampler::Fits(const SamplingBatch& sampling) const {
  return sampling.num_rows() <= capacity_.max_rows && sampling.max_top_logprobs() <= capacity_.max_top_logprobs;
}

absl::Status DeviceSampler::ReserveAdjustments(size_t count) {
  if (count <= adjustment_capacity_) return absl::OkStatus();
  const size_t capacity = std::max(count, 2 * adjustment_capacity_);
  ASSIGN_OR_RETURN(adjustments_, DeviceBytes(capacity * sizeof(TokenAdjustment)));
  ASSIGN_OR_RETURN(originals_, DeviceBytes(capacity * sizeof(float)));
  ASSIGN_OR_RETURN(adjustments_staging_, PinnedBuffer::Create(capacity * sizeof(TokenAdjustment)));
  adjustment_capacity_ = capacity;
  return absl::OkStatus();
}

absl::Status DeviceSampler::Upload(const SamplingBatch& sampling, int32_t padded_rows, cudaStream_t stream) {
  const int32_t n = sampling.num_rows();
  const int32_t rows = std::max(n, padded_rows);
  if (rows > capacity_.max_rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("the step samples ", rows, " rows; the device sampler holds ", capacity_.max_rows));
  }
  if (sampling.max_top_logprobs() > capacity_.max_top_logprobs) {
    return absl::InvalidArgumentError(absl::StrCat("a row asks for ", sampling.max_top_logprobs(),
                                                   " top logprobs; the device sampler returns at most ",
                                                   capacity_.max_top_logprobs));
  }
  const int64_t num_adjustments = static_cast<int64_t>(sampling.adjustments.size());
  for (int32_t r = 0; r < n; ++r) {  // the kernel reads these ranges unchecked
    const RowSampling& row = sampling.rows[r];
    if (row.adjustments_begin < 0 || row.adjustments_begin > row.adjustments_end ||
        row.adjustments_end > num_adjustments) {
      return absl::InvalidArgumentError(absl::StrCat("row ", r, "'s adjustments [", row.adjustments_begin, ", ",
                                                     row.adjustments_end, ") are not within the ",
                                                     num_adjustments, " given"));
    }
  }
  RETURN_IF_ERROR(ReserveAdjustments(sampling.adjustments.size()));
  auto* staging = params_staging_.as<char>();
  auto* device = params_.data<char>();
  *reinterpret_cast<DeviceSamplingParams*>(staging) = {
      .rows = reinterpret_cast<const RowSampling*>(device + kRowsOffset),
      .adjustments = adjustments_.data<TokenAdjustment>(),
      .originals = originals_.data<float>()};
  auto* staged_rows = reinterpret_cast<RowSampling*>(staging + kRowsOffset);
  std::copy(sampling.rows.begin(), sampling.rows.end(), staged_rows);
  std::fill(staged_rows + n, staged_rows + rows, RowSampling{});  // greedy, nothing adjusted
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device, staging, kRowsOffset + rows * sizeof(RowSampling),
                                       cudaMemcpyHostToDevice, stream));
  if (!sampling.adjustments.empty()) {
    const size_t bytes = sampling.adjustments.size() * sizeof(TokenAdjustment);
    std::memcpy(adjustments_staging_.data(), sampling.adjustments.data(), bytes);
    CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(adjustments_.raw(), adjustments_staging_.data(), bytes, cudaMemcpyHostToDevice, stream));
  }
  return absl::OkStatus();
}

void DeviceSampler::Enqueue(float* logits, int32_t first_row, int32_t rows, cudaStream_t stream) const {
  SampleRows({.logits = logits,
              .vocab = capacity_.vocab_size,
              .rows = rows,
              .first_row = first_row,
              .params = params_.data<DeviceSamplingParams>(),
              .out = results_.data<DeviceSample>(),
              .top = top_.data<TokenLogprob>(),
              .top_stride = capacity_.max_top_logprobs},
             stream);
}

absl::Status DeviceSampler::EnqueueReadback(const SamplingBatch& sampling, cudaStream_t stream) {
  const size_t n = sampling.num_rows();
  if (n == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(results_host_.data(), results_.raw(), n * sizeof(DeviceSample),
                                       cudaMemcpyDeviceToHost, stream));
  if (sampling.max_top_logprobs() > 0) {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(top_host_.data(), top_.raw(),
                                         n * capacity_.max_top_logprobs * sizeof(TokenLogprob),
                                         cudaMemcpyDeviceToHost, stream));
  }
  return absl::OkStatus();
}

void DeviceSampler::Read(const SamplingBatch& sampling, StepSamples& out) const {
  const int32_t n = sampling.num_rows();
  out.Resize(n, sampling.max_top_logprobs());
  const auto* results = results_host_.as<DeviceSample>();
  const auto* top = top_host_.as<TokenLogprob>();
  for (int32_t r = 0; r < n; ++r) {
    out.tokens[r] = results[r].token;
    out.logprobs[r] = results[r].logprob;
    const int32_t own = sampling.rows[r].top_logprobs;  // the rest of the row's stride is not written
    std::copy_n(top + static_cast<size_t>(r) * capacity_.max_top_logprobs, own,
                out.top.begin() + static_cast<size_t>(r) * out.top_n);
  }
}

}  // namespace moe::cuda
