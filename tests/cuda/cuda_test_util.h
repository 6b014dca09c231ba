// Helpers for the CUDA tests: skipping without a GPU, random host tensors, comparisons.
//
//   TEST(CudaNorm, MatchesCpu) {
//     MOE_REQUIRE_GPU();
//     Tensor x = testing::RandomTensor({7, 300}, /*seed=*/1);          // [7, 300] f32
//     ASSIGN_OR_FAIL(cuda::DeviceTensor dx, cuda::DeviceTensor::FromHost(x, DType::kBF16));
//     ...
//     testing::ExpectClose(cpu_out, gpu_out, {.abs = 1e-2, .rel = 1e-2});
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/check.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/dtype.h"
#include "runtime/tensor.h"

// Skips the test, reported as skipped by ctest, when no GPU is usable.
#define MOE_REQUIRE_GPU()                                                        \
  do {                                                                           \
    if (!::moe::cuda::HasDevice()) {                                             \
      GTEST_SKIP() << ::moe::cuda::NoDeviceReason() << ": this test needs a GPU"; \
    }                                                                            \
  } while (0)

#define MOE_CONCAT_INNER_(a, b) a##b
#define MOE_CONCAT_(a, b) MOE_CONCAT_INNER_(a, b)
// Fails the test (and returns) when `expr` is an error; else assigns its value to `lhs`.
#define ASSIGN_OR_FAIL(lhs, expr) ASSIGN_OR_FAIL_IMPL_(MOE_CONCAT_(statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_FAIL_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                         \
  ASSERT_TRUE(tmp.ok()) << tmp.status();     \
  lhs = std::move(tmp).value()

namespace moe::testing {

// Uniform in [-scale, scale), never all zeros; values are rounded to bf16 when `bf16_exact`
// so the CPU reference and the GPU see the same inputs.
inline Tensor RandomTensor(Shape shape, uint32_t seed, float scale = 1.0f, bool bf16_exact = true) {
  Tensor t = Tensor::Empty(DType::kF32, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = dist(rng);
    p[i] = bf16_exact ? Bf16ToFloat(FloatToBf16(v)) : v;
  }
  return t;
}

struct Tolerance {
  double abs = 0;  // |a - b| <= abs + rel * |b| for every element
  double rel = 0;
};

// Compares two f32 tensors of one shape element by element; reports the worst element.
inline void ExpectClose(const Tensor& expected, const Tensor& actual, Tolerance tol,
                        const std::string& what = "") {
  ASSERT_EQ(expected.shape(), actual.shape()) << what;
  ASSERT_EQ(expected.dtype(), DType::kF32) << what;
  ASSERT_EQ(actual.dtype(), DType::kF32) << what;
  const float* e = expected.data<float>();
  const float* a = actual.data<float>();
  int64_t bad = 0, worst = -1;
  double worst_excess = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    const double diff = std::fabs(double(e[i]) - double(a[i]));
    const double bound = tol.abs + tol.rel * std::fabs(double(e[i]));
    if (!(diff <= bound)) {  // NaN fails too
      ++bad;
      const double excess = std::isnan(diff) ? INFINITY : diff - bound;
      if (worst < 0 || excess > worst_excess) worst = i, worst_excess = excess;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << expected.numel()
                    << " elements differ; worst at flat index " << worst << ": expected "
                    << (worst >= 0 ? e[worst] : 0) << ", got " << (worst >= 0 ? a[worst] : 0);
}

// Test-only shorthands that abort on a CUDA error (the tests cannot go on without them).
inline cuda::DeviceTensor Upload(const Tensor& t, DType dtype) {
  auto d = cuda::DeviceTensor::FromHost(t, dtype);
  CHECK(d.ok()) << d.status();
  return *std::move(d);
}

inline cuda::DeviceTensor Poisoned(DType dtype, Shape shape) {
  auto d = cuda::DeviceTensor::Empty(dtype, std::move(shape));
  CHECK(d.ok()) << d.status();
  CHECK(d->Poison().ok());
  return *std::move(d);
}

inline Tensor Download(const cuda::DeviceTensor& d) {
  auto t = d.ToHost(DType::kF32);
  CHECK(t.ok()) << t.status();
  return *std::move(t);
}

inline Tensor IdsTensor(const std::vector<int32_t>& ids) {
  Tensor t = Tensor::Empty(DType::kI32, {static_cast<int64_t>(ids.size())});
  std::copy(ids.begin(), ids.end(), t.data<int32_t>());
  return t;
}

}  // namespace moe::testing
