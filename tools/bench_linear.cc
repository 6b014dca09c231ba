// bench-linear: cpu::Linear on the shapes of a Qwen3-30B-A3B layer, bf16 weights. Prints GB/s
// of weights read at one row (decode: bandwidth-bound) and GMAC/s at many rows (prefill:
// arithmetic-bound), for each GemmInputs. A measuring program, not a test.
//
//   bench-linear [--rows 1,8,32,512] [--seconds 1]
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "runtime/command_line.h"
#include "runtime/cpu/linear.h"

ABSL_FLAG(std::vector<std::string>, rows, (std::vector<std::string>{"1", "8", "32", "512"}),
          "activation rows per product, one line each");
ABSL_FLAG(double, seconds, 1.0, "time per figure");

namespace moe {
namespace {

struct Shape {
  const char* name;
  int64_t n, k;
};

// The products of one decode token, by the bytes they read: experts, attention, LM head.
constexpr Shape kShapes[] = {{"expert gate_up", 1536, 2048}, {"expert down", 2048, 768},
                             {"q_proj", 4096, 2048},        {"o_proj", 2048, 4096},
                             {"k_proj", 512, 2048},         {"lm_head", 151936, 2048}};

Tensor Random(DType dtype, std::vector<int64_t> shape, uint32_t seed) {
  Tensor t = Tensor::Empty(DType::kF32, shape);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    p[i] = static_cast<float>(seed >> 8) / (1u << 24) - 0.5f;
  }
  return t.To(dtype);
}

void Run() {
  for (const std::string& r : absl::GetFlag(FLAGS_rows)) {
    int64_t T = 0;
    if (!absl::SimpleAtoi(r, &T) || T < 1) {
      std::fprintf(stderr, "--rows: positive integers\n");
      return;
    }
    for (const Shape& s : kShapes) {
      const Tensor w = Random(DType::kBF16, {s.n, s.k}, 1);
      const Tensor x = Random(DType::kF32, {T, s.k}, 2);
      Tensor y = Tensor::Empty(DType::kF32, {T, s.n});
      for (cpu::GemmInputs inputs : {cpu::GemmInputs::kBF16, cpu::GemmInputs::kF32}) {
        cpu::Linear(x, w, y, inputs);  // warm
        int iters = 0;
        const absl::Time start = absl::Now();
        absl::Duration spent;
        do {
          cpu::Linear(x, w, y, inputs);
          ++iters;
          spent = absl::Now() - start;
        } while (spent < absl::Seconds(absl::GetFlag(FLAGS_seconds)));
        const double sec = absl::ToDoubleSeconds(spent) / iters;
        std::printf("rows %4ld  %-15s [%6ld, %4ld]  %s inputs  %8.1f us  %6.1f GB/s  %6.1f GMAC/s\n", T, s.name,
                    s.n, s.k, inputs == cpu::GemmInputs::kBF16 ? "bf16" : " f32", sec * 1e6,
                    2.0 * s.n * s.k / sec / 1e9, double(T) * s.n * s.k / sec / 1e9);
      }
    }
  }
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::ParseCommandLine(argc, argv, "bench-linear [--rows 1,8,32,512] [--seconds 1]");
  moe::Run();
  return 0;
}
