// Element types of tensors and the conversions between them.
//
// Storage types are f32, bf16, f16 and fp8 e4m3 (read-only: converted to f32 on load);
// i32 and i64 hold indices. Compute on the CPU is in f32.
//
//   DType t = DTypeFromSafetensors("BF16").value();   // DType::kBF16
//   float f = Bf16ToFloat(bits);
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moe {

enum class DType : uint8_t { kF32, kBF16, kF16, kF8E4M3, kI32, kI64 };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);  // "f32", "bf16", ...

// Safetensors spells dtypes "F32", "BF16", "F16", "F8_E4M3", "I32", "I64".
absl::StatusOr<DType> DTypeFromSafetensors(absl::string_view name);
const char* DTypeToSafetensors(DType dtype);

// Parses "float32", "bfloat16", "float16" (config.json's torch_dtype / dtype) and our
// short names "f32", "bf16", "f16".
absl::StatusOr<DType> DTypeFromName(absl::string_view name);

inline float Bf16ToFloat(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float F16ToFloat(uint16_t bits);
uint16_t FloatToF16(float f);
float F8E4M3ToFloat(uint8_t bits);

// Converts `count` elements of `src` (any floating dtype) to f32.
void ConvertToFloat(DType src_dtype, const void* src, float* dst, size_t count);
// Converts `count` f32 values to `dst_dtype` (f32, bf16 or f16).
void ConvertFromFloat(const float* src, DType dst_dtype, void* dst, size_t count);

}  // namespace moe
