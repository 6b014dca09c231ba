// The MoE layer's CUDA kernels against their CPU references, on fresh random inputs:
// Route (moe/routing.h), Dispatch and Combine (moe/dispatch.h), RouteAndDispatch (the two
// fused), RunExperts on every path (moe/experts.h), and the four chained. Every output is poisoned (NaN / -1 bytes) before
// a run, so an element a kernel skips fails the comparison.
//
// Legend: T tokens, E experts, K experts per token, N = T*K rows, D hidden, I expert width.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "moe/cuda/dispatch.h"
#include "moe/cuda/experts.h"
#include "moe/cuda/route_dispatch.h"
#include "moe/cuda/routing.h"
#include "moe/dispatch.h"
#include "moe/experts.h"
#include "moe/routing.h"
#include "moe/weights.h"
#include "runtime/cuda/device_tensor.h"
#include "tests/cuda/cuda_test_util.h"

namespace moe {

// Readable test parameters in gtest and ctest names (found by argument-dependent lookup).
void PrintTo(ScoringFunc scoring, std::ostream* os) {
  *os << (scoring == ScoringFunc::kSoftmax ? "softmax" : "sigmoid");
}
namespace cuda {
const char* PathName(ExpertsPath path) {
  switch (path) {
    case ExpertsPath::kAuto:
      return "Auto";
    case ExpertsPath::kDecode:
      return "Decode";
    case ExpertsPath::kPrefillWmma:
      return "PrefillWmma";
    case ExpertsPath::kPrefillWgmma:
      return "PrefillWgmma";
  }
  return "?";
}
void PrintTo(ExpertsPath path, std::ostream* os) { *os << PathName(path); }
}  // namespace cuda

namespace {

using cuda::DeviceTensor;
using testing::ExpectClose;
using testing::RandomTensor;
using testing::Tolerance;

// Route reorders an f32 sum of at most 128 terms (bound 128 ulp, 7.6e-6 relative) and
// expf is within 2 ulp of std::exp. Combine fuses each multiply-add that the CPU rounds
// twice: at most about 8 steps x 1 ulp of partial sums below 8.
constexpr Tolerance kRouteTol{.abs = 1e-6, .rel = 1e-5};
constexpr Tolerance kCombineTol{.abs = 1e-5, .rel = 1e-5};
// The GPU rounds h to bf16 before the down projection (2^-9 relative per element); with the
// weight scales below ys is O(1) and that rounding moves it by about 1e-3 (a few 1e-3 at
// worst over 10^6 elements), so this bound has a margin of about 3.
constexpr Tolerance kExpertsTol{.abs = 1e-2, .rel = 2e-2};

Tensor I32Tensor(const std::vector<int32_t>& values, Shape shape) {
  Tensor t = Tensor::Empty(DType::kI32, std::move(shape));
  std::copy(values.begin(), values.end(), t.data<int32_t>());
  return t;
}

std::vector<int32_t> I32Vector(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

// Router logits [T, E] in [-1, 1) with exact ties in most rows (pattern t % 4):
//   0: experts 3, E/2 and E-1 share the top logit (expected order 3, E/2, E-1)
//   1: random   2: all equal (expected order 0, 1, 2, ...)   3: odd experts copy e-1.
Tensor RouterLogitsWithTies(int64_t T, int64_t E, uint32_t seed) {
  Tensor logits = RandomTensor({T, E}, seed);
  for (int64_t t = 0; t < T; ++t) {
    float* row = logits.Row<float>(t);
    switch (t % 4) {
      case 0:
        row[3] = row[E / 2] = row[E - 1] = 4.0f;
        break;
      case 2:
        std::fill_n(row, E, 0.5f);
        break;
      case 3:
        for (int64_t e = 1; e < E; e += 2) row[e] = row[e - 1];
        break;
      default:
        break;
    }
  }
  return logits;
}

class CudaRoute : public ::testing::TestWithParam<std::tuple<ScoringFunc, bool>> {};

TEST_P(CudaRoute, MatchesCpuIncludingTies) {
  MOE_REQUIRE_GPU();
  const auto [scoring, renormalize] = GetParam();
  uint32_t seed = 100;
  for (int E : {8, 60, 128}) {
    for (int K : {1, 2, 4, 8}) {
      for (int T : {1, 5, 300}) {
        SCOPED_TRACE(absl::StrCat("T=", T, " E=", E, " K=", K));
        const Tensor logits = RouterLogitsWithTies(T, E, ++seed);
        const Routing ref =
            Route(logits, {.top_k = K, .renormalize = renormalize, .scoring = scoring});

        ASSIGN_OR_FAIL(DeviceTensor d_logits, DeviceTensor::FromHost(logits, DType::kF32));
        ASSIGN_OR_FAIL(DeviceTensor d_ids, DeviceTensor::Empty(DType::kI32, {T, K}));
        ASSIGN_OR_FAIL(DeviceTensor d_weights, DeviceTensor::Empty(DType::kF32, {T, K}));
        ASSERT_TRUE(d_ids.Poison().ok());
        ASSERT_TRUE(d_weights.Poison().ok());
        cuda::Route({.router_logits = d_logits.data<float>(),
                     .topk_ids = d_ids.data<int32_t>(),
                     .topk_weights = d_weights.data<float>(),
                     .num_tokens = T,
                     .num_experts = E,
                     .top_k = K,
                     .scoring = scoring,
                     .renormalize = renormalize},
                    nullptr);
        ASSIGN_OR_FAIL(Tensor ids, d_ids.ToHost(DType::kI32));
        ASSIGN_OR_FAIL(Tensor weights, d_weights.ToHost(DType::kF32));

        EXPECT_EQ(I32Vector(ref.topk_ids), I32Vector(ids));
        ExpectClose(ref.topk_weights, weights, kRouteTol, "topk_weights");
        // The tie rules, stated directly rather than only through the CPU reference.
        const std::vector<int32_t> three_way = {3, E / 2, E - 1};
        for (int k = 0; k < std::min(K, 3); ++k) EXPECT_EQ(ids.Row<int32_t>(0)[k], three_way[k]);
        if (T > 2) {
          for (int k = 0; k < K; ++k) EXPECT_EQ(ids.Row<int32_t>(2)[k], k);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    ScoringAndRenormalize, CudaRoute,
    ::testing::Combine(::testing::Values(ScoringFunc::kSoftmax, ScoringFunc::kSigmoid),
                       ::testing::Bool()),
    [](const auto& info) {
      return absl::StrCat(std::get<0>(info.param) == ScoringFunc::kSoftmax ? "Softmax" : "Sigmoid",
                          std::get<1>(info.param) ? "Renormalized" : "Raw");
    });

// How the test's top-k ids are spread over the experts.
enum class Skew {
  kUniform,      // K distinct experts per token, uniformly
  kEmptyExpert,  // like kUniform, but expert 1 is never chosen
  kOnExpert0,    // every token's first choice is expert 0 (with K = 1: all rows on it)
};

// topk_ids [T, K] i32, K distinct experts per token.
Tensor TopkIds(int T, int E, int K, Skew skew, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids;
  std::vector<int32_t> experts(E);
  for (int t = 0; t < T; ++t) {
    experts.resize(E);  // kEmptyExpert shortened it last token
    std::iota(experts.begin(), experts.end(), 0);
    if (skew == Skew::kEmptyExpert) experts.erase(experts.begin() + 1);
    if (skew == Skew::kOnExpert0) {
      std::shuffle(experts.begin() + 1, experts.end(), rng);
    } else {
      std::shuffle(experts.begin(), experts.end(), rng);
    }
    ids.insert(ids.end(), experts.begin(), experts.begin() + K);
  }
  return I32Tensor(ids, {T, K});
}

struct DeviceIds {
  DeviceTensor offsets, source_token, row_of;
};

struct DispatchCase {
  const char* name;
  int T, E, K;
  Skew skew;
};

TEST(CudaDispatch, PlanEqualsCpuPlan) {
  MOE_REQUIRE_GPU();
  const DispatchCase cases[] = {
      {"one token", 1, 8, 2, Skew::kUniform},
      {"few tokens", 5, 60, 4, Skew::kUniform},
      {"qwen3-like", 300, 128, 8, Skew::kUniform},
      {"an empty expert", 300, 8, 2, Skew::kEmptyExpert},
      {"all rows on one expert", 300, 64, 1, Skew::kOnExpert0},
      {"skewed, several chunks", 1000, 60, 4, Skew::kOnExpert0},
      {"no tokens", 0, 8, 2, Skew::kUniform},
  };
  uint32_t seed = 200;
  for (const DispatchCase& c : cases) {
    SCOPED_TRACE(c.name);
    const int64_t N = static_cast<int64_t>(c.T) * c.K;
    const Tensor ids = TopkIds(c.T, c.E, c.K, c.skew, ++seed);
    const DispatchPlan ref = Dispatch(ids, c.E);

    ASSIGN_OR_FAIL(DeviceTensor d_ids, DeviceTensor::FromHost(ids, DType::kI32));
    ASSIGN_OR_FAIL(DeviceTensor offsets, DeviceTensor::Empty(DType::kI32, {c.E + 1}));
    ASSIGN_OR_FAIL(DeviceTensor source_token, DeviceTensor::Empty(DType::kI32, {N}));
    ASSIGN_OR_FAIL(DeviceTensor row_of, DeviceTensor::Empty(DType::kI32, {N}));
    const size_t ws_bytes = cuda::DispatchWorkspaceBytes(c.T, c.K, c.E);
    ASSIGN_OR_FAIL(DeviceTensor ws,
                   DeviceTensor::Empty(DType::kI32, {static_cast<int64_t>(ws_bytes + 3) / 4}));
    for (DeviceTensor* t : {&offsets, &source_token, &row_of, &ws}) ASSERT_TRUE(t->Poison().ok());
    cuda::Dispatch(
        {.topk_ids = d_ids.data<int32_t>(),
         .plan = {offsets.data<int32_t>(), source_token.data<int32_t>(), row_of.data<int32_t>()},
         .num_tokens = c.T,
         .top_k = c.K,
         .num_experts = c.E},
        ws.raw(), nullptr);
    ASSIGN_OR_FAIL(Tensor got_offsets, offsets.ToHost(DType::kI32));
    ASSIGN_OR_FAIL(Tensor got_source, source_token.ToHost(DType::kI32));
    ASSIGN_OR_FAIL(Tensor got_row_of, row_of.ToHost(DType::kI32));
    EXPECT_EQ(ref.expert_offsets, I32Vector(got_offsets));
    EXPECT_EQ(ref.source_token, I32Vector(got_source));
    EXPECT_EQ(ref.row_of, I32Vector(got_row_of));
  }
}

// Ids outside [0, E) are dropped: counted for no expert, row_of -1 (worked out by hand).
TEST(CudaDispatch, DropsInvalidIds) {
  MOE_REQUIRE_GPU();
  const Tensor ids = I32Tensor({1, 7, 0, 1, -2, 3}, {3, 2});  // T = 3, K = 2, E = 4
  ASSIGN_OR_FAIL(DeviceTensor d_ids, DeviceTensor::FromHost(ids, DType::kI32));
  ASSIGN_OR_FAIL(DeviceTensor offsets, DeviceTensor::Empty(DType::kI32, {5}));
  ASSIGN_OR_FAIL(DeviceTensor source_token, DeviceTensor::Empty(DType::kI32, {6}));
  ASSIGN_OR_FAIL(DeviceTensor row_of, DeviceTensor::Empty(DType::kI32, {6}));
  for (DeviceTensor* t : {&offsets, &source_token, &row_of}) ASSERT_TRUE(t->Poison().ok());
  cuda::Dispatch(
      {.topk_ids = d_ids.data<int32_t>(),
       .plan = {offsets.data<int32_t>(), source_token.data<int32_t>(), row_of.data<int32_t>()},
       .num_tokens = 3,
       .top_k = 2,
       .num_experts = 4},
      nullptr, nullptr);
  ASSIGN_OR_FAIL(Tensor got_offsets, offsets.ToHost(DType::kI32));
  ASSIGN_OR_FAIL(Tensor got_source, source_token.ToHost(DType::kI32));
  ASSIGN_OR_FAIL(Tensor got_row_of, row_of.ToHost(DType::kI32));
  EXPECT_EQ(I32Vector(got_offsets), (std::vector<int32_t>{0, 1, 3, 3, 4}));
  EXPECT_EQ(I32Vector(got_row_of), (std::vector<int32_t>{1, -1, 0, 2, -1, 3}));
  const std::vector<int32_t> source = I32Vector(got_source);
  EXPECT_EQ(std::vector<int32_t>(source.begin(), source.begin() + 4),
            (std::vector<int32_t>{1, 0, 1, 2}));
}

// RouteAndDispatch (one launch) against Route then Dispatch: the same ids, bit-equal weights,
// the same plan, and counts of the routed rows of the real (unpadded) tokens.
TEST(CudaRouteAndDispatch, EqualsRouteThenDispatch) {
  MOE_REQUIRE_GPU();
  uint32_t seed = 700;
  for (int E : {1, 8, 60, 128, 256}) {
    for (int K : {1, 2, 8, 16}) {
      if (K > E) continue;
      for (int T : {1, 5, 37, cuda::kRouteDispatchMaxRows / K}) {
        const bool renormalize = (T + K) % 2 == 0;
        const ScoringFunc scoring = K == 2 ? ScoringFunc::kSigmoid : ScoringFunc::kSoftmax;
        const int real_tokens = std::max(1, T - 2);
        SCOPED_TRACE(absl::StrCat("T=", T, " E=", E, " K=", K));
        const int64_t N = int64_t{T} * K;
        // (the tie patterns need E >= 4)
        const Tensor logits = E >= 4 ? RouterLogitsWithTies(T, E, ++seed) : RandomTensor({T, E}, ++seed);
        const Routing cpu = Route(logits, {.top_k = K, .renormalize = renormalize, .scoring = scoring});
        const DispatchPlan cpu_plan = Dispatch(cpu.topk_ids, E);

        ASSIGN_OR_FAIL(DeviceTensor d_logits, DeviceTensor::FromHost(logits, DType::kF32));
        struct Outputs {
          DeviceTensor ids, weights, offsets, source_token, row_of;
        };
        auto make_outputs = [&]() -> Outputs {
          Outputs o{DeviceTensor::Empty(DType::kI32, {T, K}).value(), DeviceTensor::Empty(DType::kF32, {T, K}).value(),
                    DeviceTensor::Empty(DType::kI32, {E + 1}).value(), DeviceTensor::Empty(DType::kI32, {N}).value(),
                    DeviceTensor::Empty(DType::kI32, {N}).value()};
          for (DeviceTensor* t : {&o.ids, &o.weights, &o.offsets, &o.source_token, &o.row_of}) {
            EXPECT_TRUE(t->Poison().ok());
          }
          return o;
        };
        auto route_args = [&](Outputs& o) {
          return cuda::RouteArgs{.router_logits = d_logits.data<float>(),
                                 .topk_ids = o.ids.data<int32_t>(),
                                 .topk_weights = o.weights.data<float>(),
                                 .num_tokens = T,
                                 .num_experts = E,
                                 .top_k = K,
                                 .scoring = scoring,
                                 .renormalize = renormalize};
        };
        auto plan_of = [](Outputs& o) {
          return cuda::DeviceDispatchPlan{o.offsets.data<int32_t>(), o.source_token.data<int32_t>(),
                                          o.row_of.data<int32_t>()};
        };
        Outputs separate = make_outputs(), fused = make_outputs();
        cuda::Route(route_args(separate), nullptr);
        cuda::Dispatch({.topk_ids = separate.ids.data<int32_t>(),
                        .plan = plan_of(separate),
                        .num_tokens = T,
                        .top_k = K,
                        .num_experts = E},
                       nullptr, nullptr);
        Tensor counts_init = Tensor::Empty(DType::kI64, {E});
        std::fill_n(counts_init.data<int64_t>(), E, int64_t{5});
        ASSIGN_OR_FAIL(DeviceTensor counts, DeviceTensor::FromHost(counts_init, DType::kI64));
        ASSIGN_OR_FAIL(DeviceTensor real, DeviceTensor::FromHost(I32Tensor({real_tokens}, {1}), DType::kI32));
        cuda::RouteAndDispatch({.route = route_args(fused),
                                .plan = plan_of(fused),
                                .routed = {.counts = counts.data<int64_t>(), .num_tokens = real.data<int32_t>()}},
                               nullptr);

        auto host_i32 = [](const DeviceTensor& t) { return I32Vector(t.ToHost(DType::kI32).value()); };
        EXPECT_EQ(host_i32(fused.ids), I32Vector(cpu.topk_ids));
        EXPECT_EQ(host_i32(fused.ids), host_i32(separate.ids));
        ASSIGN_OR_FAIL(Tensor w_fused, fused.weights.ToHost(DType::kF32));
        ASSIGN_OR_FAIL(Tensor w_separate, separate.weights.ToHost(DType::kF32));
        EXPECT_EQ(0, std::memcmp(w_fused.raw(), w_separate.raw(), w_fused.nbytes())) << "weights differ in bits";
        EXPECT_EQ(host_i32(fused.offsets), cpu_plan.expert_offsets);
        EXPECT_EQ(host_i32(fused.source_token), cpu_plan.source_token);
        EXPECT_EQ(host_i32(fused.row_of), cpu_plan.row_of);
        std::vector<int64_t> want(E, 5);
        for (int64_t i = 0; i < int64_t{real_tokens} * K; ++i) ++want[cpu.topk_ids.data<int32_t>()[i]];
        ASSIGN_OR_FAIL(Tensor got_counts, counts.ToHost(DType::kI64));
        EXPECT_EQ(want, std::vector<int64_t>(got_counts.data<int64_t>(), got_counts.data<int64_t>() + E));
      }
    }
  }
}

struct CombineCase {
  int T, K, D;  // D = 30 takes the scalar (not float4) path
};

TEST(CudaCombine, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const CombineCase cases[] = {{1, 2, 64}, {5, 2, 30}, {37, 4, 128}, {300, 8, 256}};
  uint32_t seed = 300;
  for (const CombineCase& c : cases) {
    SCOPED_TRACE(absl::StrCat("T=", c.T, " K=", c.K, " D=", c.D));
    const int64_t N = static_cast<int64_t>(c.T) * c.K;
    const DispatchPlan plan = Dispatch(TopkIds(c.T, 16, c.K, Skew::kUniform, ++seed), 16);
    const Tensor ys = RandomTensor({N, c.D}, ++seed);
    Tensor weights = RandomTensor({c.T, c.K}, ++seed);
    for (int64_t i = 0; i < weights.numel(); ++i) weights.data<float>()[i] += 1.0f;  // (0, 2)
    Tensor ref = Tensor::Empty(DType::kF32, {c.T, c.D});
    Combine(ys, plan, weights, ref);

    ASSIGN_OR_FAIL(DeviceTensor d_ys, DeviceTensor::FromHost(ys, DType::kF32));
    ASSIGN_OR_FAIL(DeviceTensor d_row_of,
                   DeviceTensor::FromHost(I32Tensor(plan.row_of, {N}), DType::kI32));
    ASSIGN_OR_FAIL(DeviceTensor d_weights, DeviceTensor::FromHost(weights, DType::kF32));
    ASSIGN_OR_FAIL(DeviceTensor d_out, DeviceTensor::Empty(DType::kF32, {c.T, c.D}));
    ASSERT_TRUE(d_out.Poison().ok());
    cuda::Combine({.ys = d_ys.data<float>(),
                   .row_of = d_row_of.data<int32_t>(),
                   .topk_weights = d_weights.data<float>(),
                   .out = d_out.data<float>(),
                   .num_tokens = c.T,
                   .top_k = c.K,
                   .hidden = c.D},
                  nullptr);
    ASSIGN_OR_FAIL(Tensor out, d_out.ToHost(DType::kF32));
    ExpectClose(ref, out, kCombineTol, "combine");
  }
}

struct ExpertsCase {
  const char* name;
  int T, E, K, D, I;
  Skew skew;
};

void PrintTo(const ExpertsCase& c, std::ostream* os) {
  *os << c.name << " (T=" << c.T << " E=" << c.E << " K=" << c.K << " D=" << c.D << " I=" << c.I
      << ")";
}

// Expert weights scaled so that g, u and ys are all O(1): x in [-1, 1), gate/up in
// [-2/sqrt(D), 2/sqrt(D)), down in [-4/sqrt(I), 4/sqrt(I)).
struct ExpertsInputs {
  Tensor x;        // [T, D] f32, bf16-exact
  Tensor gate_up;  // [E, 2I, D] f32, bf16-exact
  Tensor down;     // [E, D, I] f32, bf16-exact
  Tensor ids;      // [T, K] i32
};

ExpertsInputs MakeExpertsInputs(const ExpertsCase& c, uint32_t seed) {
  return {RandomTensor({c.T, c.D}, seed),
          RandomTensor({c.E, 2 * c.I, c.D}, seed + 1, 2.0f / std::sqrt(float(c.D))),
          RandomTensor({c.E, c.D, c.I}, seed + 2, 4.0f / std::sqrt(float(c.I))),
          TopkIds(c.T, c.E, c.K, c.skew, seed + 3)};
}

// The CPU reference: ys [N, D] f32 in the plan's row order.
Tensor ReferenceExperts(const ExpertsInputs& in, const DispatchPlan& plan) {
  const int64_t N = static_cast<int64_t>(plan.source_token.size()), D = in.x.dim(1);
  Tensor xs = Tensor::Empty(DType::kF32, {N, D});
  Gather(in.x, plan, xs);
  const ExpertWeights weights{.gate_up = in.gate_up.To(DType::kBF16),
                              .down = in.down.To(DType::kBF16)};
  Tensor ys = Tensor::Empty(DType::kF32, {N, D});
  RunExperts(weights, cpu::GemmInputs::kF32, xs, plan.expert_offsets, ys);
  return ys;
}

void ExpectExpertsMatchCpu(const ExpertsCase& c, cuda::ExpertsPath path) {
  const int64_t N = static_cast<int64_t>(c.T) * c.K;
  const ExpertsInputs in = MakeExpertsInputs(c, 400);
  const DispatchPlan plan = Dispatch(in.ids, c.E);
  const Tensor ref = ReferenceExperts(in, plan);

  ASSIGN_OR_FAIL(DeviceTensor x, DeviceTensor::FromHost(in.x, DType::kBF16));
  ASSIGN_OR_FAIL(DeviceTensor gate_up, DeviceTensor::FromHost(in.gate_up, DType::kBF16));
  ASSIGN_OR_FAIL(DeviceTensor down, DeviceTensor::FromHost(in.down, DType::kBF16));
  ASSIGN_OR_FAIL(DeviceTensor offsets,
                 DeviceTensor::FromHost(I32Tensor(plan.expert_offsets, {c.E + 1}), DType::kI32));
  ASSIGN_OR_FAIL(DeviceTensor source_token,
                 DeviceTensor::FromHost(I32Tensor(plan.source_token, {N}), DType::kI32));
  ASSIGN_OR_FAIL(DeviceTensor ys, DeviceTensor::Empty(DType::kF32, {N, c.D}));
  const size_t ws_bytes = cuda::ExpertsWorkspaceBytes(N, c.E, c.I);
  ASSIGN_OR_FAIL(DeviceTensor ws,
                 DeviceTensor::Empty(DType::kI32, {static_cast<int64_t>(ws_bytes + 3) / 4}));
  ASSERT_TRUE(ys.Poison().ok());
  ASSERT_TRUE(ws.Poison().ok());
  cuda::RunExperts({.x = x.data<__nv_bfloat16>(),
                    .expert_offsets = offsets.data<int32_t>(),
                    .source_token = source_token.data<int32_t>(),
                    .gate_up = gate_up.data<__nv_bfloat16>(),
                    .down = down.data<__nv_bfloat16>(),
                    .ys = ys.data<float>(),
                    .num_tokens = c.T,
                    .num_rows = static_cast<int32_t>(N),
                    .num_experts = c.E,
                    .hidden = c.D,
                    .intermediate = c.I,
                    .path = path},
                   ws.raw(), nullptr);
  ASSIGN_OR_FAIL(Tensor got, ys.ToHost(DType::kF32));
  ExpectClose(ref, got, kExpertsTol, "ys");
}

const ExpertsCase kExpertsCases[] = {
    {"Tiny", 1, 8, 2, 64, 32, Skew::kUniform},
    {"TinyI48", 3, 8, 2, 64, 48, Skew::kUniform},
    {"Olmoe", 37, 60, 4, 128, 88, Skew::kUniform},
    {"Qwen3", 300, 128, 8, 256, 96, Skew::kUniform},
    // Real widths; E is 16 rather than 128 to keep the random weights at 100 MB.
    {"RealWidths", 1, 16, 8, 2048, 768, Skew::kUniform},
    {"FirstChoiceExpert0", 300, 8, 2, 64, 48, Skew::kOnExpert0},
    {"AllRowsOnExpert0", 70, 8, 1, 64, 32, Skew::kOnExpert0},
    {"EmptyExpert", 37, 60, 4, 128, 88, Skew::kEmptyExpert},
    // 150 rows per expert (two 128-row tiles, the second partial: its second warpgroup has
    // no rows), and D and I that are not multiples of the 64-deep stages or of the tiles'
    // widths; D takes 7 stages, so the 4-stage ring is refilled.
    {"TilesAndTails", 300, 4, 2, 392, 200, Skew::kUniform},
};

class CudaExperts : public ::testing::TestWithParam<std::tuple<ExpertsCase, cuda::ExpertsPath>> {};

TEST_P(CudaExperts, MatchesCpu) {
  MOE_REQUIRE_GPU();
  ExpectExpertsMatchCpu(std::get<0>(GetParam()), std::get<1>(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaExperts,
                         ::testing::Combine(::testing::ValuesIn(kExpertsCases),
                                            ::testing::Values(cuda::ExpertsPath::kDecode,
                                                              cuda::ExpertsPath::kPrefillWmma,
                                                              cuda::ExpertsPath::kPrefillWgmma)),
                         [](const auto& info) {
                           return absl::StrCat(std::get<0>(info.param).name, "_",
                                               cuda::PathName(std::get<1>(info.param)));
                         });

// The whole layer on the GPU (Route -> Dispatch -> RunExperts (auto path) -> Combine)
// against the same chain on the CPU.
TEST(CudaMoeLayer, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const ExpertsCase cases[] = {{"decode", 2, 8, 2, 64, 32, Skew::kUniform},
                               {"prefill", 300, 60, 4, 128, 88, Skew::kUniform}};
  for (const ExpertsCase& c : cases) {
    SCOPED_TRACE(c.name);
    const int64_t N = static_cast<int64_t>(c.T) * c.K;
    const ExpertsInputs in = MakeExpertsInputs(c, 500);
    const Tensor logits = RandomTensor({c.T, c.E}, 600, 4.0f);
    const Routing routing = Route(logits, {.top_k = c.K, .renormalize = true});
    const DispatchPlan plan = Dispatch(routing.topk_ids, c.E);
    const Tensor ys_ref = ReferenceExperts(in, plan);
    Tensor ref = Tensor::Empty(DType::kF32, {c.T, c.D});
    Combine(ys_ref, plan, routing.topk_weights, ref);

    ASSIGN_OR_FAIL(DeviceTensor d_logits, DeviceTensor::FromHost(logits, DType::kF32));
    ASSIGN_OR_FAIL(DeviceTensor x, DeviceTensor::FromHost(in.x, DType::kBF16));
    ASSIGN_OR_FAIL(DeviceTensor gate_up, DeviceTensor::FromHost(in.gate_up, DType::kBF16));
    ASSIGN_OR_FAIL(DeviceTensor down, DeviceTensor::FromHost(in.down, DType::kBF16));
    ASSIGN_OR_FAIL(DeviceTensor ids, DeviceTensor::Empty(DType::kI32, {c.T, c.K}));
    ASSIGN_OR_FAIL(DeviceTensor weights, DeviceTensor::Empty(DType::kF32, {c.T, c.K}));
    ASSIGN_OR_FAIL(DeviceTensor offsets, DeviceTensor::Empty(DType::kI32, {c.E + 1}));
    ASSIGN_OR_FAIL(DeviceTensor source_token, DeviceTensor::Empty(DType::kI32, {N}));
    ASSIGN_OR_FAIL(DeviceTensor row_of, DeviceTensor::Empty(DType::kI32, {N}));
    ASSIGN_OR_FAIL(DeviceTensor ys, DeviceTensor::Empty(DType::kF32, {N, c.D}));
    ASSIGN_OR_FAIL(DeviceTensor out, DeviceTensor::Empty(DType::kF32, {c.T, c.D}));
    const size_t ws_bytes = std::max(cuda::DispatchWorkspaceBytes(c.T, c.K, c.E),
                                     cuda::ExpertsWorkspaceBytes(N, c.E, c.I));
    ASSIGN_OR_FAIL(DeviceTensor ws,
                   DeviceTensor::Empty(DType::kI32, {static_cast<int64_t>(ws_bytes + 3) / 4}));
    for (DeviceTensor* t : {&ids, &weights, &offsets, &source_token, &row_of, &ys, &out, &ws}) {
      ASSERT_TRUE(t->Poison().ok());
    }

    cuda::Route({.router_logits = d_logits.data<float>(),
                 .topk_ids = ids.data<int32_t>(),
                 .topk_weights = weights.data<float>(),
                 .num_tokens = c.T,
                 .num_experts = c.E,
                 .top_k = c.K,
                 .renormalize = true},
                nullptr);
    const cuda::DeviceDispatchPlan d_plan{offsets.data<int32_t>(), source_token.data<int32_t>(),
                                          row_of.data<int32_t>()};
    cuda::Dispatch({.topk_ids = ids.data<int32_t>(),
                    .plan = d_plan,
                    .num_tokens = c.T,
                    .top_k = c.K,
                    .num_experts = c.E},
                   ws.raw(), nullptr);
    cuda::RunExperts({.x = x.data<__nv_bfloat16>(),
                      .expert_offsets = d_plan.expert_offsets,
                      .source_token = d_plan.source_token,
                      .gate_up = gate_up.data<__nv_bfloat16>(),
                      .down = down.data<__nv_bfloat16>(),
                      .ys = ys.data<float>(),
                      .num_tokens = c.T,
                      .num_rows = static_cast<int32_t>(N),
                      .num_experts = c.E,
                      .hidden = c.D,
                      .intermediate = c.I},
                     ws.raw(), nullptr);
    cuda::Combine({.ys = ys.data<float>(),
                   .row_of = d_plan.row_of,
                   .topk_weights = weights.data<float>(),
                   .out = out.data<float>(),
                   .num_tokens = c.T,
                   .top_k = c.K,
                   .hidden = c.D},
                  nullptr);
    ASSIGN_OR_FAIL(Tensor got, out.ToHost(DType::kF32));
    ExpectClose(ref, got, kExpertsTol, "moe layer out");
  }
}

}  // namespace
}  // namespace moe
