#include "runtime/dtype.h"

#include <cmath>

#include "gtest/gtest.h"

namespace moe {
namespace {

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(-2.5f)), -2.5f);
  // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
}

TEST(DTypeTest, F16RoundTripsRepresentableValues) {
  for (float f : {0.0f, 1.0f, -1.5f, 65504.0f, 6.103515625e-05f, 5.9604645e-08f, 0.333251953125f}) {
    EXPECT_EQ(F16ToFloat(FloatToF16(f)), f) << f;
  }
  EXPECT_TRUE(std::isinf(F16ToFloat(FloatToF16(1e6f))));
}

TEST(DTypeTest, F8E4M3DecodesKnownValues) {
  EXPECT_EQ(F8E4M3ToFloat(0x38), 1.0f);    // exponent 7 = bias
  EXPECT_EQ(F8E4M3ToFloat(0x7e), 448.0f);  // largest finite
  EXPECT_EQ(F8E4M3ToFloat(0xb8), -1.0f);
  EXPECT_EQ(F8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_TRUE(std::isnan(F8E4M3ToFloat(0x7f)));
}

TEST(DTypeTest, ParsesSafetensorsAndConfigNames) {
  EXPECT_EQ(*DTypeFromSafetensors("BF16"), DType::kBF16);
  EXPECT_EQ(*DTypeFromSafetensors("F8_E4M3"), DType::kF8E4M3);
  EXPECT_FALSE(DTypeFromSafetensors("Q4_K").ok());
  EXPECT_EQ(*DTypeFromName("bfloat16"), DType::kBF16);
  EXPECT_EQ(*DTypeFromName("float32"), DType::kF32);
  EXPECT_FALSE(DTypeFromName("int4").ok());
}

}  // namespace
}  // namespace moe
