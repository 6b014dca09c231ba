// The safetensors reader: round trips, sharded checkpoints, and every way a file can be
// broken failing with a message that names the file and the problem.
#include "runtime/safetensors.h"

#include <cstring>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint.h"
#include "tests/test_util.h"

namespace moe {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Fills each tensor with its element index (as the tensor's dtype).
void IndexFill(const TensorSpec& spec, absl::Span<std::byte> out) {
  const int64_t n = NumElements(spec.shape);
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>(i);
  ConvertFromFloat(values.data(), spec.dtype, out.data(), n);
}

// Writes a raw file: 8-byte header length, header text, then `data_bytes` bytes.
std::string WriteRaw(const std::string& dir, uint64_t header_len, const std::string& header,
                     size_t data_bytes) {
  const std::string path = dir + "/model.safetensors";
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out << header << std::string(data_bytes, '\0');
  return path;
}

std::string OpenError(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_FALSE(file.ok()) << "expected " << path << " to be rejected";
  return std::string(file.status().message());
}

TEST(SafetensorsTest, WritesAndReadsBack) {
  const std::string path = testing::ScratchDir("rt") + "/model.safetensors";
  const std::vector<TensorSpec> specs = {{"a", DType::kF32, {2, 3}},
                                         {"b.weight", DType::kBF16, {4}},
                                         {"c", DType::kF16, {3, 1}}};
  ASSERT_TRUE(WriteSafetensors(path, specs, IndexFill, {{"format", "pt"}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->names(), (std::vector<std::string>{"a", "b.weight", "c"}));
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  for (const TensorSpec& spec : specs) {
    auto t = (*file)->Get(spec.name);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->shape(), spec.shape);
    EXPECT_EQ(t->dtype(), spec.dtype);
    Tensor f = t->To(DType::kF32);
    for (int64_t i = 0; i < f.numel(); ++i) EXPECT_EQ(f.data<float>()[i], i);
  }
  EXPECT_THAT(std::string((*file)->Get("nope").status().message()), HasSubstr("no tensor \"nope\""));
}

TEST(SafetensorsTest, ShardedCheckpointFindsEachTensorInItsShard) {
  const std::string dir = testing::ScratchDir("sharded");
  ASSERT_TRUE(WriteSafetensors(dir + "/s1.safetensors", {{{"x", DType::kF32, {2}}}}, IndexFill).ok());
  ASSERT_TRUE(WriteSafetensors(dir + "/s2.safetensors", {{{"y", DType::kF32, {3}}}}, IndexFill).ok());
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"metadata": {}, "weight_map": {"x": "s1.safetensors", "y": "s2.safetensors"}})";
  auto ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->Get("y")->dim(0), 3);
  EXPECT_THAT(ckpt->FileOf("x"), HasSubstr("s1.safetensors"));

  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"weight_map": {"x": "s1.safetensors", "y": "s1.safetensors"}})";
  auto bad = Checkpoint::Open(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("places \"y\" in s1.safetensors, which lacks it"));
}

TEST(SafetensorsTest, ReadsTensorsWhoseDataIsNotAligned) {
  // The data starts 8-byte aligned; an f16 ahead of "w" leaves w's f32 elements straddling
  // their 4-byte alignment in the mapping.
  const std::string dir = testing::ScratchDir("unaligned");
  std::string header =
      R"({"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"w":{"dtype":"F32","shape":[3],"data_offsets":[2,14]}})";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  const std::string path = dir + "/model.safetensors";
  const float w_values[3] = {1.5f, -2.25f, 1e30f};
  {
    std::ofstream out(path, std::ios::binary);
    const uint64_t header_len = header.size();
    out.write(reinterpret_cast<const char*>(&header_len), 8);
    out << header;
    const uint16_t h = 0x3C00;  // 1.0 in f16
    out.write(reinterpret_cast<const char*>(&h), 2);
    out.write(reinterpret_cast<const char*>(w_values), sizeof(w_values));
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<Tensor> w = (*file)->Get("w");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w->data<float>()) % alignof(float), 0u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(w->data<float>()[i], w_values[i]) << i;
  absl::StatusOr<Tensor> h = (*file)->Get("h");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data<uint16_t>()[0], 0x3C00);
}

TEST(SafetensorsTest, RejectsTruncatedFile) {
  const std::string dir = testing::ScratchDir("truncated");
  const std::string header = R"({"w":{"dtype":"F32","shape":[4,4],"data_offsets":[0,64]}})";
  const std::string path = WriteRaw(dir, header.size(), header, 40);
  EXPECT_THAT(OpenError(path), AllOf(HasSubstr(path), HasSubstr("tensor \"w\""), HasSubstr("truncated")));
}

TEST(SafetensorsTest, RejectsHeaderLengthPastEndOfFile) {
  const std::string dir = testing::ScratchDir("header_len");
  const std::string path = WriteRaw(dir, 5000, "{}", 0);
  EXPECT_THAT(OpenError(path), AllOf(HasSubstr(path), HasSubstr("header length 5000 runs past the end")));
  const std::string huge = WriteRaw(dir, uint64_t{1} << 40, "{}", 0);
  EXPECT_THAT(OpenError(huge), HasSubstr("exceeds the limit"));
  std::ofstream(dir + "/model.safetensors", std::ios::trunc) << "abc";
  EXPECT_THAT(OpenError(dir + "/model.safetensors"), HasSubstr("too short"));
}

TEST(SafetensorsTest, RejectsBadJson) {
  const std::string dir = testing::ScratchDir("json");
  const std::string header = R"({"w":{"dtype":"F32",)";
  EXPECT_THAT(OpenError(WriteRaw(dir, header.size(), header, 0)), HasSubstr("header is not valid JSON"));
  const std::string not_object = "[1, 2]";
  EXPECT_THAT(OpenError(WriteRaw(dir, not_object.size(), not_object, 0)), HasSubstr("not a JSON object"));
}

TEST(SafetensorsTest, RejectsUnknownDtype) {
  const std::string dir = testing::ScratchDir("dtype");
  const std::string header = R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})";
  EXPECT_THAT(OpenError(WriteRaw(dir, header.size(), header, 2)),
              AllOf(HasSubstr("tensor \"w\""), HasSubstr("unsupported dtype \"Q4\"")));
}

TEST(SafetensorsTest, RejectsShapeThatDisagreesWithByteRange) {
  const std::string dir = testing::ScratchDir("shape");
  const std::string header = R"({"w":{"dtype":"BF16","shape":[3,3],"data_offsets":[0,16]}})";
  EXPECT_THAT(OpenError(WriteRaw(dir, header.size(), header, 16)),
              AllOf(HasSubstr("tensor \"w\""), HasSubstr("needs 18 bytes but data_offsets span 16")));
  const std::string negative = R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})";
  EXPECT_THAT(OpenError(WriteRaw(dir, negative.size(), negative, 4)), HasSubstr("negative dimension"));
}

TEST(SafetensorsTest, RejectsOverlappingTensors) {
  const std::string dir = testing::ScratchDir("overlap");
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  EXPECT_THAT(OpenError(WriteRaw(dir, header.size(), header, 16)),
              HasSubstr("tensors \"a\" and \"b\" overlap"));
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open("/nonexistent/model.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  auto ckpt = Checkpoint::Open(testing::ScratchDir("empty"));
  EXPECT_THAT(std::string(ckpt.status().message()), HasSubstr("no model.safetensors"));
}

}  // namespace
}  // namespace moe
