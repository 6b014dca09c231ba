// Expert parallelism on the CUDA backend, under mpirun: each rank loads its share of the
// experts onto its GPU and the MoE layers exchange rows over NCCL. Every rank runs its own
// prompts (some ranks none, some finishing early) and must produce the greedy tokens that
// one GPU with every expert produces for them, with logits within the bf16 bound of the
// CUDA model test. Built for GPUs (one per rank) and over the CUDA emulator, whose NCCL
// runs over MPI, so that ctest runs it on the CPU.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "moe/cuda/cuda_moe_model.h"
#include "runtime/cuda/device.h"
#include "runtime/dist/communicator.h"
#include "tests/dist/rank_gpu.h"
#include "tests/sequence_runner.h"

namespace moe {
namespace {

std::string DataDir() {
  const char* moved = std::getenv("MOE_TEST_DATA_DIR");
  return moved != nullptr && moved[0] != '\0' ? moved : MOE_TEST_DATA_DIR;
}

// n prompts of lengths 1 + (5 * i) % 13, ids from a fixed LCG.
std::vector<std::vector<int32_t>> Prompts(int n, int vocab) {
  std::vector<std::vector<int32_t>> prompts(n);
  uint32_t x = 777;
  for (int i = 0; i < n; ++i) {
    for (int t = 0; t < 1 + (5 * i) % 13; ++t) {
      x = x * 1664525u + 1013904223u;
      prompts[i].push_back(static_cast<int32_t>((x >> 8) % vocab));
    }
  }
  return prompts;
}

struct Case {
  const char* model;
  int num_prompts;
  int prefill_chunk;
};

class ExpertParallelCudaModel : public ::testing::TestWithParam<Case> {};

TEST_P(ExpertParallelCudaModel, GivesOneGpusTokens) {
  MOE_USE_RANK_GPU();

  const Case& c = GetParam();
  const std::string dir = DataDir() + "/models/" + c.model;
  auto sharded = cuda::CudaMoeModel::Load(
      dir, {.max_tokens = 256, .max_seqs = 16, .comm = &testing::Group(), .exchange_on_one_rank = true});
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto whole = cuda::CudaMoeModel::Load(dir, {.max_tokens = 256, .max_seqs = 16});
  ASSERT_TRUE(whole.ok()) << whole.status();
  const int R = testing::Group().Size(), me = testing::Group().Rank();
  const auto all = Prompts(c.num_prompts, (*whole)->info().vocab_size);
  std::vector<std::vector<int32_t>> mine;
  for (int i = me; i < c.num_prompts; i += R) mine.push_back(all[i]);

  GreedyOptions options{.max_new_tokens = 4, .prefill_chunk = c.prefill_chunk, .keep_step_logits = true};
  auto want = RunGreedy(**whole, mine, options);
  ASSERT_TRUE(want.ok()) << want.status();
  options.group = &testing::Group();
  auto got = RunGreedy(**sharded, mine, options);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->sequences.size(), mine.size());
  double worst = 0;
  for (size_t j = 0; j < mine.size(); ++j) {
    EXPECT_EQ(got->sequences[j].tokens, want->sequences[j].tokens) << c.model << " prompt " << me + j * R;
    for (size_t s = 0; s < got->sequences[j].step_logits.size(); ++s) {
      const std::vector<float>& a = got->sequences[j].step_logits[s];
      const std::vector<float>& b = want->sequences[j].step_logits[s];
      float scale = 0, diff = 0;
      for (size_t v = 0; v < a.size(); ++v) scale = std::max(scale, std::abs(b[v])), diff = std::max(diff, std::abs(a[v] - b[v]));
      worst = std::max(worst, double(diff) / std::max(scale, 1e-6f));
    }
  }
  // The same kernels on the same rows; only the rows sharing an expert GEMM differ.
  EXPECT_LT(worst, 0.03) << "largest logit difference, relative to the largest logit";
  std::printf("rank %d: %zu prompts, worst relative logit difference %.2e, %lld rows sent, %lld received\n", me,
              mine.size(), worst, static_cast<long long>((*sharded)->expert_traffic().rows_sent),
              static_cast<long long>((*sharded)->expert_traffic().rows_received));
}

INSTANTIATE_TEST_SUITE_P(GoldenModels, ExpertParallelCudaModel,
                         ::testing::Values(Case{"qwen3_moe", 5, 0}, Case{"qwen2_moe", 3, 4}, Case{"mixtral", 1, 0}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.model) + "_" + std::to_string(info.param.num_prompts) +
                                  "prompts" + (info.param.prefill_chunk > 0 ? "_chunked" : "");
                         });

}  // namespace
}  // namespace moe
