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
#include "tests/sequence_runner.h"

namespace moe {
namespace {

dist::Communicator* g_comm = nullptr;

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

int LocalRank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "PMIX_LOCAL_RANK"}) {
    if (const char* v = std::getenv(var); v != nullptr) return std::atoi(v);
  }
  return 0;
}

struct Case {
  const char* model;
  int num_prompts;
  int prefill_chunk;
};

class ExpertParallelCudaModel : public ::testing::TestWithParam<Case> {};

TEST_P(ExpertParallelCudaModel, GivesOneGpusTokens) {
  if (!cuda::HasDevice()) GTEST_SKIP() << cuda::NoDeviceReason() << ": this test needs a GPU per rank";
  int devices = 0;
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceCount(&devices), cudaSuccess);
  ASSERT_EQ(cudaGetDeviceProperties(&prop, 0), cudaSuccess);
  const bool emulated = std::string(prop.name).rfind("EMU", 0) == 0;  // a device per process
  const int device = emulated ? 0 : LocalRank();
  if (device >= devices) GTEST_SKIP() << "needs one GPU per rank: local rank " << device << " of " << devices;
  ASSERT_EQ(cudaSetDevice(device), cudaSuccess);

  const Case& c = GetParam();
  const std::string dir = DataDir() + "/models/" + c.model;
  auto sharded = cuda::CudaMoeModel::Load(
      dir, {.max_tokens = 256, .max_seqs = 16, .comm = g_comm, .exchange_on_one_rank = true});
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto whole = cuda::CudaMoeModel::Load(dir, {.max_tokens = 256, .max_seqs = 16});
  ASSERT_TRUE(whole.ok()) << whole.status();
  const int R = g_comm->Size(), me = g_comm->Rank();
  const auto all = Prompts(c.num_prompts, (*whole)->info().vocab_size);
  std::vector<std::vector<int32_t>> mine;
  for (int i = me; i < c.num_prompts; i += R) mine.push_back(all[i]);

  GreedyOptions options{.max_new_tokens = 4, .prefill_chunk = c.prefill_chunk, .keep_step_logits = true};
  auto want = RunGreedy(**whole, mine, options);
  ASSERT_TRUE(want.ok()) << want.status();
  options.group = g_comm;
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

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto comm = moe::dist::MakeCommunicator({.timeout = absl::Seconds(120)});
  if (!comm.ok()) {
    std::fprintf(stderr, "%s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  moe::g_comm = comm->get();
  if ((*comm)->Rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  std::vector<int64_t> any = {failed};
  (void)(*comm)->AllReduce(absl::MakeSpan(any), moe::dist::ReduceOp::kMax);
  return any[0] != 0 ? 1 : 0;
}
