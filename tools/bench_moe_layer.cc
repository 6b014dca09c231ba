// bench-moe-layer: the routed-experts layer on the GPU (router GEMM, Route, Dispatch,
// grouped expert GEMMs, Combine) at real model shapes, for a range of token counts.
//
// For each M it prints microseconds per layer, the bytes of expert weights the step
// actually touched (distinct experts chosen) over the time as GB/s and as a share of the
// device-to-device copy bandwidth measured in the same run, and TFLOP/s as a share of the
// cuBLAS bf16 GEMM rate measured in the same run. Random weights and inputs; the router
// spreads tokens about evenly, as trained routers roughly do.
//
// --paths runs each M once per expert path (auto picks by M; decode, wmma and wgmma force
// one), so the paths can be compared at the same M.
//
//   bench-moe-layer [--configs tests/data/configs/qwen3-30b-a3b.json,...] [--tokens 1,4,16]
//                   [--paths auto,wmma,wgmma]
#include <cmath>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/command_line.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "moe/config.h"
#include "moe/cuda/moe_layer.h"
#include "runtime/cuda/bench_util.h"
#include "runtime/cuda/device.h"
#include "runtime/cuda/elementwise.h"
#include "runtime/status_macros.h"

ABSL_FLAG(std::vector<std::string>, configs,
          (std::vector<std::string>{"tests/data/configs/qwen3-30b-a3b.json", "tests/data/configs/mixtral-8x7b.json"}),
          "config.json files whose MoE layer shape is measured");
ABSL_FLAG(std::vector<std::string>, tokens,
          (std::vector<std::string>{"1", "4", "16", "64", "256", "1024", "4096", "16384"}), "token counts M");
ABSL_FLAG(std::vector<std::string>, paths, (std::vector<std::string>{"auto"}),
          "expert paths to run at each M: auto, decode, wmma, wgmma");
ABSL_FLAG(int, iterations, 20, "timed runs per point");

namespace moe::cuda {
namespace {

absl::StatusOr<DeviceTensor> Random(DType dtype, Shape shape, uint64_t seed, float scale, cudaStream_t stream) {
  ASSIGN_OR_RETURN(DeviceTensor t, DeviceTensor::Empty(dtype, std::move(shape)));
  FillUniform({.data = t.raw(), .bf16 = dtype == DType::kBF16, .count = t.numel(), .seed = seed, .scale = scale},
              stream);
  return t;
}

struct NamedPath {
  std::string name;
  ExpertsPath path;
};

absl::StatusOr<std::vector<NamedPath>> ParsePaths(const std::vector<std::string>& names) {
  std::vector<NamedPath> paths;
  for (const std::string& name : names) {
    if (name == "auto") paths.push_back({name, ExpertsPath::kAuto});
    else if (name == "decode") paths.push_back({name, ExpertsPath::kDecode});
    else if (name == "wmma") paths.push_back({name, ExpertsPath::kPrefillWmma});
    else if (name == "wgmma") paths.push_back({name, ExpertsPath::kPrefillWgmma});
    else return absl::InvalidArgumentError("--paths: unknown path \"" + name + "\" (auto, decode, wmma, wgmma)");
  }
  return paths;
}

absl::Status BenchConfig(const std::string& path, const std::vector<int>& tokens,
                         const std::vector<NamedPath>& expert_paths, const Ceilings& ceilings,
                         cudaStream_t stream, const Blas& blas) {
  ASSIGN_OR_RETURN(MoeConfig c, LoadConfigFile(path));
  const int D = c.hidden_size, E = c.num_experts, K = c.top_k, I = c.expert_intermediate_size;
  int max_tokens = 1;
  for (int m : tokens) max_tokens = std::max(max_tokens, m);
  std::vector<MoeLayer> layers;  // one per expert path
  for (const NamedPath& p : expert_paths) {
    ASSIGN_OR_RETURN(MoeLayer layer, MoeLayer::Create({.max_tokens = max_tokens, .hidden = D, .num_experts = E,
                                                       .top_k = K, .intermediate = I,
                                                       .renormalize = c.norm_topk_prob, .experts_path = p.path}));
    layers.push_back(std::move(layer));
  }
  DeviceExpertWeights experts;
  ASSIGN_OR_RETURN(experts.gate_up, Random(DType::kBF16, {E, 2 * I, D}, 1, 1.0f / std::sqrt(D), stream));
  ASSIGN_OR_RETURN(experts.down, Random(DType::kBF16, {E, D, I}, 2, 1.0f / std::sqrt(I), stream));
  ASSIGN_OR_RETURN(DeviceTensor router, Random(DType::kBF16, {E, D}, 3, 1.0f / std::sqrt(D), stream));
  ASSIGN_OR_RETURN(DeviceTensor h, Random(DType::kBF16, {max_tokens, D}, 4, 1.0f, stream));
  ASSIGN_OR_RETURN(DeviceTensor out, DeviceTensor::Empty(DType::kF32, {max_tokens, D}));

  const double expert_bytes = 3.0 * I * D * 2;  // gate, up, down rows of one expert, bf16
  std::cout << absl::StrFormat("\n%s: D %d, E %d, top-%d, I %d (%.1f MB per expert)\n", path, D, E, K, I,
                               expert_bytes / 1e6);
  std::cout << absl::StrFormat("%7s %7s %10s %8s %10s %8s %9s %8s\n", "M", "path", "us", "experts", "GB/s",
                               "%copy", "TFLOP/s", "%gemm");
  for (int m : tokens) {
    for (size_t p = 0; p < layers.size(); ++p) {
      MoeLayer& layer = layers[p];
      ASSIGN_OR_RETURN(const double us, TimeOnStream(stream, absl::GetFlag(FLAGS_iterations), [&] {
        return layer.Run(blas, stream, h, m, router, experts, out);
      }));
      ASSIGN_OR_RETURN(Tensor ids, layer.topk_ids().Slice(0, m).ToHost(DType::kI32));
      std::set<int32_t> touched(ids.data<int32_t>(), ids.data<int32_t>() + ids.numel());
      const double bytes = touched.size() * expert_bytes + double(E) * D * 2;  // + router
      const double flops = 2.0 * m * K * 3.0 * I * D + 2.0 * m * E * D;
      const double gbs = bytes / (us * 1e3), tflops = flops / (us * 1e6);
      std::cout << absl::StrFormat("%7d %7s %10.1f %8d %10.1f %7.1f%% %9.1f %7.1f%%\n", m, expert_paths[p].name,
                                   us, touched.size(), gbs, 100.0 * gbs / ceilings.copy_gb_per_s, tflops,
                                   100.0 * tflops / ceilings.gemm_tflop_per_s);
    }
  }
  return absl::OkStatus();
}

absl::Status Run() {
  if (!HasDevice()) return absl::FailedPreconditionError(NoDeviceReason());
  std::vector<int> tokens;
  for (const std::string& t : absl::GetFlag(FLAGS_tokens)) {
    int m = 0;
    if (!absl::SimpleAtoi(t, &m) || m < 1) return absl::InvalidArgumentError("--tokens: bad count \"" + t + "\"");
    tokens.push_back(m);
  }
  cudaStream_t stream = nullptr;  // the legacy stream: this program does nothing else
  ASSIGN_OR_RETURN(const std::vector<NamedPath> paths, ParsePaths(absl::GetFlag(FLAGS_paths)));
  ASSIGN_OR_RETURN(Blas blas, Blas::Create(stream));
  ASSIGN_OR_RETURN(const Ceilings ceilings, MeasureCeilings(stream));
  std::cout << DeviceDescription() << "\n"
            << absl::StrFormat("ceilings measured now: copy %.0f GB/s (read + write), cuBLAS bf16 GEMM %.0f TFLOP/s\n",
                               ceilings.copy_gb_per_s, ceilings.gemm_tflop_per_s);
  for (const std::string& path : absl::GetFlag(FLAGS_configs)) {
    RETURN_IF_ERROR(BenchConfig(path, tokens, paths, ceilings, stream, blas));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace moe::cuda

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "Times one MoE layer on a GPU against its ceilings: bench-moe-layer");
  const absl::Status status = moe::cuda::Run();
  if (!status.ok()) {
    std::cerr << "bench-moe-layer: " << status << "\n";
    return 1;
  }
  return 0;
}
