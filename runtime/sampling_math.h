// The arithmetic of sampling that the CPU and CUDA samplers share, written once for both, so
// that the same logits, parameters and seed give the same token on either.
//
// A row is sampled in this order:
//   1. Processed logits: ProcessLogit on each adjusted token (mask, bias, penalties).
//   2. Greedy: the first maximum of the processed logits (NaN skipped; none if all -inf).
//   3. Otherwise each token's key: the float bits of p = exp((l - max) / T), 1 for the most
//      likely token, 0 for -inf and NaN (KeyOf). Keys order as the probabilities do.
//   4. Kept: keys >= a threshold, the largest of
//        min_key (min_p, and never below 2^-40),
//        the k-th largest key (top-k; ties at it are kept),
//        the largest key whose tokens, with all above it, weigh at least top_p of what is
//        left (top-p).
//      A token's weight is p in units of 2^-40, an integer (WeightOfKey), so every sum is
//      exact and the same in any order: no backend's reduction order changes a token.
//   5. The draw: r = 24 Philox bits as a fraction of the kept weight; the token is the
//      first, in id order, at which the running kept weight passes r.
// Float steps use the *Rn helpers: IEEE single operations, never fused (CUDA's __f*_rn; the
// host files that use them compile with -ffp-contract=off).
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/host_device.h"
#include "runtime/sampling.h"

namespace moe::sampling {

MOE_HOST_DEVICE inline float MulRn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
MOE_HOST_DEVICE inline float AddRn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
MOE_HOST_DEVICE inline float SubRn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
MOE_HOST_DEVICE inline float DivRn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

MOE_HOST_DEVICE inline uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}
MOE_HOST_DEVICE inline float BitsFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

constexpr float kLowestExponent = -87.0f;  // e^-87 is about 1.6e-38, still a normal float
// The polynomial of 2^f on [0, 1), degree 6: its coefficients, highest first (a function,
// so that device code reads them too).
MOE_HOST_DEVICE constexpr float Exp2Coefficient(int i) {
  constexpr float kCoefficients[] = {1.535336188e-4f, 1.339887440e-3f, 9.618437357e-3f, 5.550332471e-2f,
                                     2.402264791e-1f, 6.931472028e-1f, 1.0f};
  return kCoefficients[i];
}
constexpr float kLog2E = 1.44269504f;

// e^x for x <= 0 to about 2e-7 relative (x below -87, and NaN, give e^-87): 2^(x log2 e) as
// 2^floor times the polynomial of the fraction. The CPU's vector form (runtime/cpu/sampler.cc)
// makes the same operations in the same order, lane by lane.
MOE_HOST_DEVICE inline float ExpNonPositive(float x) {
  x = x > kLowestExponent ? x : kLowestExponent;
  const float t = MulRn(x, kLog2E);
  int32_t whole = static_cast<int32_t>(t);         // truncates toward 0 ...
  whole -= static_cast<float>(whole) > t ? 1 : 0;  // ... so one less where t is not whole: floor
  const float f = SubRn(t, static_cast<float>(whole));  // [0, 1)
  float p = Exp2Coefficient(0);
  for (int i = 1; i < 7; ++i) p = AddRn(MulRn(p, f), Exp2Coefficient(i));
  return MulRn(p, BitsFloat(static_cast<uint32_t>(whole + 127) << 23));
}

// A token's logit after its adjustment: the mask, then the bias, then the repetition penalty
// (divides a positive logit, multiplies a negative one), then frequency and presence.
MOE_HOST_DEVICE inline float ProcessLogit(float logit, const TokenAdjustment& a, const RowSampling& row) {
  if (a.masked) return -__builtin_huge_valf();
  float l = AddRn(logit, a.bias);
  if (a.seen && row.repetition_penalty != 1.0f) {
    l = l > 0 ? DivRn(l, row.repetition_penalty) : MulRn(l, row.repetition_penalty);
  }
  if (a.output_count > 0) {
    l = SubRn(l, AddRn(MulRn(row.frequency_penalty, static_cast<float>(a.output_count)), row.presence_penalty));
  }
  return l;
}

// The key of a processed logit l, given the row's largest (finite) processed logit.
MOE_HOST_DEVICE inline uint32_t KeyOf(float l, float max_logit, float inv_temperature) {
  if (!(l > -__builtin_huge_valf())) return 0;  // -inf and NaN: never drawn
  return FloatBits(ExpNonPositive(MulRn(SubRn(l, max_logit), inv_temperature)));
}

constexpr uint32_t kKeyOfOne = 0x3F800000u;      // FloatBits(1.0f): the most likely token
constexpr uint32_t kSmallestKey = 0x2B800000u;  // FloatBits(2^-40): lighter tokens weigh 0

// trunc(p * 2^40) for the float p whose bits are `key` (0 <= p <= 1), in integers only and
// without branches (the CPU's loops over it vectorize): p = mantissa * 2^(exponent - 150),
// so the weight is mantissa * 2^(exponent - 110); zero and denormal keys weigh 0.
MOE_HOST_DEVICE inline uint64_t WeightOfKey(uint32_t key) {
  const int32_t shift = static_cast<int32_t>(key >> 23) - 110;
  const uint64_t mantissa = (key & 0x7FFFFFu) | 0x800000u;  // < 2^24: shifting right 24 or more gives 0
  return shift >= 0 ? mantissa << shift : mantissa >> (-shift < 31 ? -shift : 31);
}

// floor(total * fraction / 2^24) without overflow, for total < 2^58 and fraction <= 2^24.
MOE_HOST_DEVICE inline uint64_t ScaleByFraction(uint64_t total, uint32_t fraction) {
  return (total >> 24) * fraction + (((total & 0xFFFFFFu) * fraction) >> 24);
}

}  // namespace moe::sampling
