// The CUDA attention kernels against the CPU reference (runtime/cpu/attention.h) on random
// bf16-exact inputs: decode batches with split contexts, prefill, chunked prefill, mixed
// steps, sliding windows, GQA ratios, head dims and block sizes; and WriteKv slot by slot.
// Blocks come from a shuffled pool, and the cache, the output and the workspace are poisoned
// (NaN bytes) first, so a read or a write in the wrong place shows up. Skips without a GPU.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cpu/attention.h"
#include "runtime/cuda/attention.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/cuda/device_step_batch.h"
#include "runtime/cuda/device_tensor.h"
#include "runtime/status_macros.h"
#include "runtime/step_batch.h"
#include "tests/cuda/cuda_test_util.h"

namespace moe {
namespace {

using bf16 = __nv_bfloat16;

// Outputs are averages of values in [-1, 1]. Decode is fp32 throughout, so its error is the
// bf16 rounding of the output (<= 2^-9 relative); prefill also rounds the softmax weights
// to bf16 for the tensor-core P V product (<= 2^-9 of max |v|). Both stay under 4e-3.
constexpr testing::Tolerance kTolerance{.abs = 1e-2, .rel = 1e-2};

struct SeqSpec {
  int32_t context_len;  // tokens in the cache after the step
  int32_t query_len;    // this step's tokens: the last query_len positions
};

struct AttentionCase {
  std::string name;
  int32_t num_heads, num_kv_heads, head_dim, block_size;
  std::vector<SeqSpec> seqs;
  int32_t sliding_window = 0;
  float q_scale = 1.0f;            // bound on |q|: larger makes the softmax sharper
  int32_t stated_max_context = 0;  // > 0: replaces max_context_len (a graph captured elsewhere)
};
void PrintTo(const AttentionCase& c, std::ostream* os) { *os << c.name; }

int32_t CeilDiv(int32_t a, int32_t b) { return (a + b - 1) / b; }

// One case's batches over a shuffled block pool, so tables are neither contiguous nor
// sorted. `history` holds each sequence's tokens before its query (written by earlier steps),
// `step` the step itself. Table entries past a sequence's blocks point at spare blocks that
// nothing writes: they stay poisoned, as does the tail of each sequence's last block.
struct PagedBatches {
  StepBatch history, step;
  int32_t num_blocks = 0;
};

void AddSequence(StepBatch& b, const std::vector<int32_t>& table, int32_t begin, int32_t end,
                 int32_t block_size) {
  for (int32_t p = begin; p < end; ++p) {
    b.token_ids.push_back(0);
    b.positions.push_back(p);
    b.slot_mapping.push_back(int64_t{table[p / block_size]} * block_size + p % block_size);
  }
  b.query_starts.push_back(b.num_tokens());
  b.context_lens.push_back(end);
  b.block_tables.insert(b.block_tables.end(), table.begin(), table.end());
}

PagedBatches MakeBatches(const std::vector<SeqSpec>& seqs, int32_t block_size, uint32_t seed) {
  constexpr int32_t kSpare = 2;
  int32_t width = 1, used = 0;
  for (const SeqSpec& s : seqs) {
    width = std::max(width, CeilDiv(s.context_len, block_size) + 1);
    used += CeilDiv(s.context_len, block_size);
  }
  PagedBatches b;
  b.num_blocks = used + kSpare;
  std::vector<int32_t> pool(b.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(pool.begin(), pool.end(), rng);
  for (StepBatch* sb : {&b.history, &b.step}) {
    sb->max_blocks_per_seq = width;
    sb->query_starts = {0};
  }
  int32_t next = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqSpec& s = seqs[i];
    std::vector<int32_t> table(width, pool[used + i % kSpare]);
    for (int32_t j = 0; j < CeilDiv(s.context_len, block_size); ++j) table[j] = pool[next++];
    AddSequence(b.history, table, 0, s.context_len - s.query_len, block_size);
    AddSequence(b.step, table, s.context_len - s.query_len, s.context_len, block_size);
  }
  return b;
}

// The random inputs of one case: q [T, H, hd], k/v [T, KVH, hd] of the step, and
// history_k/history_v [T_history, KVH, hd] already in the cache.
struct StepInputs {
  Tensor q, k, v, history_k, history_v;
};

StepInputs MakeInputs(const AttentionCase& c, const PagedBatches& b) {
  const int64_t T = b.step.num_tokens(), Th = b.history.num_tokens();
  return {testing::RandomTensor({T, c.num_heads, c.head_dim}, 1, c.q_scale),
          testing::RandomTensor({T, c.num_kv_heads, c.head_dim}, 2),
          testing::RandomTensor({T, c.num_kv_heads, c.head_dim}, 3),
          testing::RandomTensor({Th, c.num_kv_heads, c.head_dim}, 4),
          testing::RandomTensor({Th, c.num_kv_heads, c.head_dim}, 5)};
}

Tensor RunOnCpu(const AttentionCase& c, const PagedBatches& b, const StepInputs& x) {
  const Shape cache_shape = {b.num_blocks, c.block_size, c.num_kv_heads, c.head_dim};
  Tensor key_cache = Tensor::Zeros(DType::kF32, cache_shape);
  Tensor value_cache = Tensor::Zeros(DType::kF32, cache_shape);
  cpu::WriteKv(x.history_k, x.history_v, b.history, key_cache, value_cache);
  cpu::WriteKv(x.k, x.v, b.step, key_cache, value_cache);
  Tensor out = Tensor::Empty(DType::kF32, x.q.shape());
  cpu::PagedAttention(
      x.q, key_cache, value_cache, b.step,
      {.scale = 1.0f / std::sqrt(float(c.head_dim)), .sliding_window = c.sliding_window}, out);
  return out;
}

// Uploads `batch`, writes k, v [T, KVH, hd] into the cache and waits (the uploader's pinned
// area is reused by the next upload).
absl::Status WriteHistoryOnGpu(const Tensor& k, const Tensor& v, const StepBatch& batch,
                               const cuda::PagedKvLayer& cache, cuda::StepBatchUploader& uploader) {
  if (batch.num_tokens() == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(const cuda::DeviceTensor dk, cuda::DeviceTensor::FromHost(k, DType::kBF16));
  ASSIGN_OR_RETURN(const cuda::DeviceTensor dv, cuda::DeviceTensor::FromHost(v, DType::kBF16));
  ASSIGN_OR_RETURN(const cuda::DeviceStepBatch db, uploader.Upload(batch, nullptr));
  cuda::WriteKv({.k = dk.data<bf16>(), .v = dv.data<bf16>(), .cache = cache}, db, nullptr);
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(nullptr));
  return absl::OkStatus();
}

// The step as the engine runs it: history in the cache, WriteKv of the step, PagedAttention.
// Returns out [T, H, hd] as f32.
absl::StatusOr<Tensor> RunOnGpu(const AttentionCase& c, const PagedBatches& b,
                                const StepInputs& x) {
  const int32_t T = b.step.num_tokens();
  ASSIGN_OR_RETURN(
      cuda::StepBatchUploader uploader,
      cuda::StepBatchUploader::Create({.max_tokens = std::max(T, b.history.num_tokens()),
                                       .max_seqs = b.step.num_seqs(),
                                       .max_blocks_per_seq = b.step.max_blocks_per_seq}));
  const Shape cache_shape = {b.num_blocks, c.block_size, c.num_kv_heads, c.head_dim};
  ASSIGN_OR_RETURN(cuda::DeviceTensor key_cache,
                   cuda::DeviceTensor::Empty(DType::kBF16, cache_shape));
  ASSIGN_OR_RETURN(cuda::DeviceTensor value_cache,
                   cuda::DeviceTensor::Empty(DType::kBF16, cache_shape));
  RETURN_IF_ERROR(key_cache.Poison());
  RETURN_IF_ERROR(value_cache.Poison());
  const cuda::PagedKvLayer cache{key_cache.data<bf16>(), value_cache.data<bf16>(), b.num_blocks,
                                 c.block_size,           c.num_kv_heads,           c.head_dim};
  RETURN_IF_ERROR(WriteHistoryOnGpu(x.history_k, x.history_v, b.history, cache, uploader));

  ASSIGN_OR_RETURN(const cuda::DeviceTensor q, cuda::DeviceTensor::FromHost(x.q, DType::kBF16));
  ASSIGN_OR_RETURN(const cuda::DeviceTensor k, cuda::DeviceTensor::FromHost(x.k, DType::kBF16));
  ASSIGN_OR_RETURN(const cuda::DeviceTensor v, cuda::DeviceTensor::FromHost(x.v, DType::kBF16));
  ASSIGN_OR_RETURN(cuda::DeviceTensor out, cuda::DeviceTensor::Empty(DType::kBF16, x.q.shape()));
  RETURN_IF_ERROR(out.Poison());
  ASSIGN_OR_RETURN(cuda::DeviceStepBatch db, uploader.Upload(b.step, nullptr));
  if (c.stated_max_context > 0) db.max_context_len = c.stated_max_context;
  const size_t workspace_bytes =
      cuda::PagedAttentionWorkspaceBytes(T, c.num_heads, c.head_dim, db.max_context_len);
  ASSIGN_OR_RETURN(cuda::DeviceTensor workspace,
                   cuda::DeviceTensor::Empty(DType::kI32, {int64_t(workspace_bytes / 4) + 1}));
  RETURN_IF_ERROR(workspace.Poison());

  cuda::WriteKv({.k = k.data<bf16>(), .v = v.data<bf16>(), .cache = cache}, db, nullptr);
  cuda::PagedAttention({.q = q.data<bf16>(),
                        .cache = cache,
                        .out = out.data<bf16>(),
                        .num_heads = c.num_heads,
                        .scale = 1.0f / std::sqrt(float(c.head_dim)),
                        .sliding_window = c.sliding_window},
                       db, workspace.raw(), workspace_bytes, nullptr);
  return out.ToHost(DType::kF32);
}

class CudaAttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(CudaAttentionTest, MatchesCpu) {
  MOE_REQUIRE_GPU();
  const AttentionCase& c = GetParam();
  const PagedBatches b = MakeBatches(c.seqs, c.block_size, /*seed=*/7);
  const absl::Status valid = ValidateStepBatch(b.step, {.vocab_size = 1,
                                                        .num_blocks = b.num_blocks,
                                                        .block_size = c.block_size,
                                                        .max_context = 1 << 20});
  ASSERT_TRUE(valid.ok()) << valid;
  const StepInputs x = MakeInputs(c, b);
  const Tensor expected = RunOnCpu(c, b, x);
  ASSIGN_OR_FAIL(const Tensor actual, RunOnGpu(c, b, x));
  testing::ExpectClose(expected, actual, kTolerance, c.name);
}

// 64 sequences of 1 to 1500 tokens: enough (token, head, partition) rows that the split
// keeps its 512-key partitions.
std::vector<SeqSpec> ManyDecodes() {
  std::vector<SeqSpec> seqs;
  for (int32_t s = 0; s < 64; ++s) seqs.push_back({1 + (s * 37) % 1500, 1});
  return seqs;
}

// Decode: one query token per sequence (max_query_len 1). Partitions hold 512 keys, or as
// few as 64 for small batches (PlanDecodeSplit), as in all but the 64-sequence case.
const AttentionCase kDecodeCases[] = {
    {"decode_one_sequence_context_1", 4, 4, 64, 16, {{1, 1}}},
    {"decode_batch_gqa8_hd128_split",
     16,
     2,
     128,
     16,
     {{1, 1}, {17, 1}, {512, 1}, {513, 1}, {1000, 1}, {3000, 1}}},
    {"decode_gqa2_hd32_bs4_split", 8, 4, 32, 4, {{5, 1}, {1030, 1}, {64, 1}}},
    {"decode_gqa1_hd16_bs4_split", 4, 4, 16, 4, {{3, 1}, {600, 1}}},
    {"decode_gqa16_hd64_two_head_chunks", 32, 2, 64, 16, {{700, 1}, {9, 1}}},
    {"decode_gqa8_hd256_split", 8, 1, 256, 16, {{1100, 1}, {40, 1}}},
    {"decode_block_size_1", 2, 1, 32, 1, {{70, 1}, {1, 1}}},
    {"decode_window_8", 8, 2, 128, 16, {{100, 1}, {5, 1}, {3000, 1}}, 8},
    {"decode_window_700_split", 4, 1, 64, 4, {{3000, 1}, {600, 1}}, 700},
    {"decode_sharp_softmax", 4, 4, 128, 16, {{900, 1}, {30, 1}}, 0, 8.0f},
    {"decode_one_partition_for_long_contexts", 8, 2, 128, 16, {{3000, 1}, {20, 1}}, 0, 1.0f, 1},
    {"decode_surplus_empty_partitions", 8, 2, 64, 16, {{1000, 1}, {3, 1}}, 0, 1.0f, 5000},
    {"decode_64_seqs_512_key_partitions", 32, 4, 128, 16, ManyDecodes()},
    {"prefill_one_token", 8, 2, 128, 16, {{1, 1}}},
};

// Prefill path (max_query_len > 1): query tiles of 64 rows, key tiles of 64 (32 at hd 256).
const AttentionCase kPrefillCases[] = {
    {"prefill_17_tokens_gqa1_hd128", 4, 4, 128, 16, {{17, 17}}},
    {"prefill_130_tokens_gqa8_hd128", 16, 2, 128, 16, {{130, 130}}},
    {"prefill_130_tokens_gqa2_hd32_bs4", 4, 2, 32, 4, {{130, 130}}},
    {"prefill_hd16_bs4", 2, 1, 16, 4, {{70, 70}}},
    {"prefill_hd64_with_single_token_sequence", 4, 2, 64, 16, {{100, 100}, {1, 1}}},
    {"prefill_hd256", 2, 1, 256, 16, {{90, 90}}},
    {"prefill_block_size_1", 2, 2, 32, 1, {{33, 33}}},
    {"prefill_sharp_softmax", 4, 2, 64, 16, {{200, 200}}, 0, 8.0f},
    {"chunked_prefill", 8, 2, 128, 16, {{300, 100}, {77, 13}}},
    {"chunked_prefill_gqa8_bs4", 8, 1, 64, 4, {{1000, 70}}},
    {"mixed_prefill_and_decodes",
     8,
     2,
     128,
     16,
     {{130, 50}, {1000, 1}, {7, 1}, {64, 64}, {3000, 1}}},
    {"prefill_window_8", 4, 2, 64, 4, {{40, 40}}, 8},
    {"chunked_prefill_window_8", 4, 1, 128, 16, {{200, 70}, {9, 9}}, 8},
    {"mixed_window_100_hd32", 4, 2, 32, 16, {{300, 130}, {2000, 1}, {50, 2}}, 100},
};

std::string CaseName(const ::testing::TestParamInfo<AttentionCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Decode, CudaAttentionTest, ::testing::ValuesIn(kDecodeCases), CaseName);
INSTANTIATE_TEST_SUITE_P(Prefill, CudaAttentionTest, ::testing::ValuesIn(kPrefillCases), CaseName);

struct WriteKvCase {
  std::string name;
  int32_t num_kv_heads, head_dim, block_size;
  bool offset_inputs = false;  // k, v one element into their buffers: not 16-byte aligned
};
void PrintTo(const WriteKvCase& c, std::ostream* os) { *os << c.name; }

// WriteKv of one step into a poisoned cache; returns the cache's bf16 bits [slots, KVH * hd].
absl::StatusOr<Tensor> WriteKvOnGpu(const WriteKvCase& c, const PagedBatches& b, const Tensor& k,
                                    const Tensor& v) {
  const int32_t T = b.step.num_tokens();
  ASSIGN_OR_RETURN(
      cuda::StepBatchUploader uploader,
      cuda::StepBatchUploader::Create({.max_tokens = T,
                                       .max_seqs = b.step.num_seqs(),
                                       .max_blocks_per_seq = b.step.max_blocks_per_seq}));
  const Shape cache_shape = {b.num_blocks, c.block_size, c.num_kv_heads, c.head_dim};
  ASSIGN_OR_RETURN(cuda::DeviceTensor key_cache,
                   cuda::DeviceTensor::Empty(DType::kBF16, cache_shape));
  ASSIGN_OR_RETURN(cuda::DeviceTensor value_cache,
                   cuda::DeviceTensor::Empty(DType::kBF16, cache_shape));
  RETURN_IF_ERROR(key_cache.Poison());
  RETURN_IF_ERROR(value_cache.Poison());
  const int64_t offset = c.offset_inputs ? 1 : 0;
  auto upload = [offset](const Tensor& x) {  // x flattened after `offset` zeros
    Tensor flat = Tensor::Zeros(DType::kF32, {offset + x.numel()});
    std::copy_n(x.data<float>(), x.numel(), flat.data<float>() + offset);
    return cuda::DeviceTensor::FromHost(flat, DType::kBF16);
  };
  ASSIGN_OR_RETURN(const cuda::DeviceTensor dk, upload(k));
  ASSIGN_OR_RETURN(const cuda::DeviceTensor dv, upload(v));
  ASSIGN_OR_RETURN(const cuda::DeviceStepBatch db, uploader.Upload(b.step, nullptr));
  const cuda::PagedKvLayer cache{key_cache.data<bf16>(), value_cache.data<bf16>(), b.num_blocks,
                                 c.block_size,           c.num_kv_heads,           c.head_dim};
  cuda::WriteKv({.k = dk.data<bf16>() + offset, .v = dv.data<bf16>() + offset, .cache = cache}, db,
                nullptr);
  const int64_t row = int64_t{c.num_kv_heads} * c.head_dim;
  ASSIGN_OR_RETURN(const Tensor keys, key_cache.ToHost(DType::kBF16));
  ASSIGN_OR_RETURN(const Tensor values, value_cache.ToHost(DType::kBF16));
  Tensor both = Tensor::Empty(DType::kBF16, {2, keys.numel() / row, row});
  std::copy_n(keys.data<uint16_t>(), keys.numel(), both.data<uint16_t>());
  std::copy_n(values.data<uint16_t>(), values.numel(), both.data<uint16_t>() + keys.numel());
  return both;
}

class CudaWriteKvTest : public ::testing::TestWithParam<WriteKvCase> {};

TEST_P(CudaWriteKvTest, WritesExactlyTheMappedSlots) {
  MOE_REQUIRE_GPU();
  const WriteKvCase& c = GetParam();
  // Sequences with history: its slots are not written by this step and must stay poisoned.
  const PagedBatches b = MakeBatches({{40, 40}, {9, 3}, {100, 1}}, c.block_size, /*seed=*/11);
  const int64_t T = b.step.num_tokens(), row = int64_t{c.num_kv_heads} * c.head_dim;
  const Tensor k = testing::RandomTensor({T, c.num_kv_heads, c.head_dim}, 1);
  const Tensor v = testing::RandomTensor({T, c.num_kv_heads, c.head_dim}, 2);
  ASSIGN_OR_FAIL(const Tensor cache, WriteKvOnGpu(c, b, k, v));  // [2, slots, row] bf16 bits
  const int64_t slots = cache.dim(1);
  std::vector<int64_t> token_of_slot(slots, -1);
  for (int64_t t = 0; t < T; ++t) token_of_slot[b.step.slot_mapping[t]] = t;
  int64_t bad = 0;
  for (int which = 0; which < 2; ++which) {
    const Tensor& src = which == 0 ? k : v;
    for (int64_t s = 0; s < slots; ++s) {
      const uint16_t* got = cache.data<uint16_t>() + (which * slots + s) * row;
      const int64_t t = token_of_slot[s];
      for (int64_t i = 0; i < row; ++i) {
        const uint16_t want = t >= 0 ? FloatToBf16(src.Row<float>(t)[i]) : uint16_t{0xFFFF};
        if (got[i] != want && bad++ == 0) {
          ADD_FAILURE() << (which == 0 ? "key" : "value") << " cache slot " << s << " element " << i
                        << ": expected bits " << want << ", got " << got[i]
                        << (t >= 0 ? " (written by token " + std::to_string(t) + ")"
                                   : " (unwritten)");
        }
      }
    }
  }
  EXPECT_EQ(bad, 0) << "cache elements differ";
}

const WriteKvCase kWriteKvCases[] = {
    {"vectorized_kvh2_hd128_bs16", 2, 128, 16},
    {"vectorized_kvh8_hd16_bs4", 8, 16, 4},
    {"unaligned_inputs_kvh4_hd32_bs4", 4, 32, 4, true},
    {"row_not_a_multiple_of_8_kvh1_hd12_bs16", 1, 12, 16},
};

INSTANTIATE_TEST_SUITE_P(WriteKv, CudaWriteKvTest, ::testing::ValuesIn(kWriteKvCases),
                         [](const ::testing::TestParamInfo<WriteKvCase>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace moe
