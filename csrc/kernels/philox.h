// Counter-based Gaussian numbers shared by the CPU and CUDA Stein samplers.
//
// Philox4x32-10 (Salmon et al., SC'11; the Random123 constants) maps a 128-bit counter and a
// 64-bit key to four 32-bit words. The Stein sampler keys it by the user's seed and counts
//   counter = (coordinate block q, sample index low 32 bits, sample index high 32 bits, point),
// so z[point, sample, 4q .. 4q+3] is a pure function of (seed, point, sample, q): any thread
// can regenerate any direction, and nothing depends on thread count, batch or chunk size.
//
// The words become normals by Box-Muller, computed in float32 with +, -, *, / and sqrt only
// (a polynomial log and sin/cos instead of libm), each operation rounded once (the CUDA path
// uses the _rn intrinsics so nvcc cannot contract them into FMAs). Every step is therefore
// IEEE-exact and reproducible: hessext/ops/_reference.py repeats the same operations with torch
// tensors and gets the same bits. The polynomials are accurate to about one float32 ulp, and
// uniforms lie in [2^-24, 1), so |z| <= 5.77: both effects are far below any Monte-Carlo error.
#pragma once
#include <cstdint>
#include <cstring>
#if !defined(__CUDACC__) && defined(__SSE2__)
#include <immintrin.h>
#endif

#include "common.h"

namespace hessext {
namespace philox {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // key schedule (golden ratio, sqrt 3)

// Philox4x32 with 10 rounds, in place on c[0..3].
HESSEXT_HD void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
#pragma unroll
#if !defined(__CUDACC__)
#pragma GCC unroll 10
#endif
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kM0) * c[0];
    const uint64_t p1 = uint64_t(kM1) * c[2];
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c[0] = hi1 ^ c[1] ^ k0;
    c[1] = lo1;
    c[2] = hi0 ^ c[3] ^ k1;
    c[3] = lo0;
    k0 += kW0;
    k1 += kW1;
  }
}

// Single-rounding float32 arithmetic: on the device the intrinsics forbid FMA contraction; on
// the host g++ without -mfma (the build's default) has no FMA to contract into.
#if defined(__CUDA_ARCH__)
HESSEXT_HD float fmul(float a, float b) { return __fmul_rn(a, b); }
HESSEXT_HD float fadd(float a, float b) { return __fadd_rn(a, b); }
HESSEXT_HD float fsub(float a, float b) { return __fsub_rn(a, b); }
HESSEXT_HD float fdiv(float a, float b) { return __fdiv_rn(a, b); }
HESSEXT_HD float fsqrt(float a) { return __fsqrt_rn(a); }
HESSEXT_HD int32_t float_bits(float a) { return __float_as_int(a); }
HESSEXT_HD float bits_float(int32_t a) { return __int_as_float(a); }
#else
HESSEXT_HD float fmul(float a, float b) { return a * b; }
HESSEXT_HD float fadd(float a, float b) { return a + b; }
HESSEXT_HD float fsub(float a, float b) { return a - b; }
HESSEXT_HD float fdiv(float a, float b) { return a / b; }
HESSEXT_HD float fsqrt(float a) { return __builtin_sqrtf(a); }
HESSEXT_HD int32_t float_bits(float a) { return __builtin_bit_cast(int32_t, a); }
HESSEXT_HD float bits_float(int32_t a) { return __builtin_bit_cast(float, a); }
#endif

// ln(u) for u = ((word >> 9) + 1/2) 2^-23, i.e. u in [2^-24, 1): u = m 2^e with m in
// [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s) = 2s (1 + s^2/3 + ... + s^8/9), s = (m-1)/(m+1),
// |s| <= 0.172 so the next term is below 2e-9 relative.
HESSEXT_HD float log_uniform(uint32_t word) {
  const float u = fmul(fadd(float(int32_t(word >> 9)), 0.5f), 1.1920928955078125e-07f);  // exact
  const int32_t bits = float_bits(u);
  const int32_t m_bits = (bits & 0x7fffff) | 0x3f800000;  // m in [1, 2)
  // m > sqrt(2) (0x3fb504f3) then m / 2 and e + 1: integer ops, so that loops vectorise
  const int32_t big = m_bits > 0x3fb504f3 ? 1 : 0;
  const float m = bits_float(m_bits - (big << 23));
  const int32_t e = ((bits >> 23) & 0xff) - 127 + big;
  const float s = fdiv(fsub(m, 1.0f), fadd(m, 1.0f));
  const float s2 = fmul(s, s);
  float p = 0.111111111111111111f;
  p = fadd(fmul(p, s2), 0.142857142857142857f);
  p = fadd(fmul(p, s2), 0.2f);
  p = fadd(fmul(p, s2), 0.333333333333333333f);
  p = fadd(fmul(p, s2), 1.0f);
  const float log_m = fmul(fadd(s, s), p);
  // ln 2 split so that e * ln2_hi is exact for |e| <= 25
  const float fe = float(e);
  return fadd(fmul(fe, 0.693145751953125f), fadd(fmul(fe, 1.428606765330187e-06f), log_m));
}

// (cos t, sin t) for t = (pi/2)(q + f), q = word >> 30, f in (0, 1) from 23 further bits:
// a uniform angle. The Taylor polynomials run on phi = (pi/2)(f - 1/2) in (-pi/4, pi/4)
// (truncation below 3e-8), the quadrant q rotates by multiples of pi/2 (exact).
HESSEXT_HD void cos_sin_uniform(uint32_t word, float& c_out, float& s_out) {
  const uint32_t q = word >> 30;
  const float f = fmul(fadd(float(int32_t((word >> 7) & 0x7fffffu)), 0.5f), 1.1920928955078125e-07f);
  const float phi = fmul(fsub(f, 0.5f), 1.57079632679489661923f);
  const float phi2 = fmul(phi, phi);
  float ps = 2.75573192239858906526e-06f;                 // 1/9!
  ps = fadd(fmul(ps, phi2), -1.98412698412698412698e-04f);  // -1/7!
  ps = fadd(fmul(ps, phi2), 8.33333333333333333333e-03f);   // 1/5!
  ps = fadd(fmul(ps, phi2), -0.166666666666666666667f);     // -1/3!
  const float s = fadd(phi, fmul(fmul(phi, phi2), ps));
  float pc = -2.75573192239858906526e-07f;                // -1/10!
  pc = fadd(fmul(pc, phi2), 2.48015873015873015873e-05f);   // 1/8!
  pc = fadd(fmul(pc, phi2), -1.38888888888888888889e-03f);  // -1/6!
  pc = fadd(fmul(pc, phi2), 4.16666666666666666667e-02f);   // 1/4!
  pc = fadd(fmul(pc, phi2), -0.5f);
  const float c = fadd(1.0f, fmul(phi2, pc));
  // quadrant q: (c, s), (-s, c), (-c, -s), (s, -c), as bit operations (vectorisable)
  const int32_t swap = -int32_t(q & 1u);                         // all ones for q odd
  const int32_t c_bits = float_bits(c), s_bits = float_bits(s);
  const int32_t first = (s_bits & swap) | (c_bits & ~swap);
  const int32_t second = (c_bits & swap) | (s_bits & ~swap);
  const int32_t neg_first = int32_t(((q + 1u) >> 1) & 1u) << 31;  // q = 1, 2
  const int32_t neg_second = int32_t(q >> 1) << 31;              // q = 2, 3
  c_out = bits_float(first ^ neg_first);
  s_out = bits_float(second ^ neg_second);
}

// The four standard normals z[4q .. 4q+3] of direction (point, sample) under seed.
HESSEXT_HD void normals4(uint64_t seed, uint64_t point, uint64_t sample, uint32_t q,
                         float z[4]) {
  uint32_t c[4] = {q, uint32_t(sample), uint32_t(sample >> 32), uint32_t(point)};
  philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
  float cos_a, sin_a, cos_b, sin_b;
  cos_sin_uniform(c[1], cos_a, sin_a);
  cos_sin_uniform(c[3], cos_b, sin_b);
  const float r_a = fsqrt(fmul(-2.0f, log_uniform(c[0])));
  const float r_b = fsqrt(fmul(-2.0f, log_uniform(c[2])));
  z[0] = fmul(r_a, cos_a);
  z[1] = fmul(r_a, sin_a);
  z[2] = fmul(r_b, cos_b);
  z[3] = fmul(r_b, sin_b);
}

#if !defined(__CUDACC__)
// Host version for a whole direction: z[0 .. 4 ceil(D/4)) (the caller pads to a multiple of 4).
// The same operations as normals4, arranged as stage loops over blocks of kBlock coordinate
// quadruples so that the compiler vectorises them (several times faster than one block at a
// time; the bits are the same since each SIMD lane rounds like the scalar code).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// AVX2 doubles the lanes of the 32x32->64-bit multiplies; no FMA is enabled, so the bits stay.
__attribute__((target_clones("avx2", "default")))
#endif
inline void normals_row(uint64_t seed, uint64_t point, uint64_t sample, int64_t D, float* z) {
  constexpr int kBlock = 16;
  const int64_t Q = (D + 3) / 4;
  const uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  const uint32_t s_lo = uint32_t(sample), s_hi = uint32_t(sample >> 32), pt = uint32_t(point);
  alignas(64) uint32_t w0[kBlock], w1[kBlock], w2[kBlock], w3[kBlock];
  alignas(64) float ca[kBlock], sa[kBlock], cb[kBlock], sb[kBlock], ra[kBlock], rb[kBlock];
  for (int64_t q0 = 0; q0 < Q; q0 += kBlock) {
    for (int i = 0; i < kBlock; ++i) {
      uint32_t c[4] = {uint32_t(q0 + i), s_lo, s_hi, pt};
      philox4x32_10(c, k0, k1);
      w0[i] = c[0];
      w1[i] = c[1];
      w2[i] = c[2];
      w3[i] = c[3];
    }
    for (int i = 0; i < kBlock; ++i) {
      cos_sin_uniform(w1[i], ca[i], sa[i]);
      cos_sin_uniform(w3[i], cb[i], sb[i]);
      ra[i] = fmul(-2.0f, log_uniform(w0[i]));
      rb[i] = fmul(-2.0f, log_uniform(w2[i]));
    }
    // sqrt in its own loop: with errno semantics (the default) g++ vectorises only the SSE
    // intrinsic, which is correctly rounded like sqrtf
#if defined(__SSE2__)
    for (int i = 0; i < kBlock; i += 4) {
      _mm_store_ps(ra + i, _mm_sqrt_ps(_mm_load_ps(ra + i)));
      _mm_store_ps(rb + i, _mm_sqrt_ps(_mm_load_ps(rb + i)));
    }
#else
    for (int i = 0; i < kBlock; ++i) {
      ra[i] = fsqrt(ra[i]);
      rb[i] = fsqrt(rb[i]);
    }
#endif
    const int64_t n = (Q - q0) < kBlock ? (Q - q0) : kBlock;
    for (int64_t i = 0; i < n; ++i) {
      z[4 * (q0 + i) + 0] = fmul(ra[i], ca[i]);
      z[4 * (q0 + i) + 1] = fmul(ra[i], sa[i]);
      z[4 * (q0 + i) + 2] = fmul(rb[i], cb[i]);
      z[4 * (q0 + i) + 3] = fmul(rb[i], sb[i]);
    }
  }
}
#endif

}  // namespace philox
}  // namespace hessext
