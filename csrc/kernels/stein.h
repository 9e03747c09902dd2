// Bodies of the Stein (SmoothHess) sampler ops shared by CPU and CUDA.
//
// Directions: z[b, j, :] = philox::normals4(seed, point_offset + b, pair_offset + j, q) for
// j the pair index (the sample index without antithetic pairs), a function of the indices
// only. With antithetic pairs the sampler evaluates x + sqrt(sigma) z and x - sqrt(sigma) z.
//
// stein_perturb:    x [B, D] -> xp [B, A, P, D],  xp[b, 0, j] = x[b] + s z[b, j],
//                                                  xp[b, 1, j] = x[b] - s z[b, j]  (A = 2)
// stein_accumulate: h [B, A, P, K] (the gradients at xp, or at the output of a first Linear
//                   layer), hess_acc [B, M, D, K] float64, grad_acc [B, M, K] float64:
//                   hess_acc[b, t % M] += sum_{j in tile t} z[b, j] (h[b,0,j] - h[b,1,j])^T
//                   grad_acc[b, t % M] += sum_{j in tile t} (h[b,0,j] + h[b,1,j])
//                   over tiles t of tile_pairs consecutive pairs (global numbering); M groups
//                   give the batch-means standard error. z is regenerated per tile, or read
//                   from an optional z [B, P, D] the caller formed anyway (same bits).
#pragma once
#include <cstdint>

#include "common.h"
#include "kernels/philox.h"

namespace hessext {

// x + s z rounded twice, as torch computes it, also on the device (no FMA contraction).
#if defined(__CUDA_ARCH__)
HESSEXT_HD float stein_mul(float a, float b) { return __fmul_rn(a, b); }
HESSEXT_HD double stein_mul(double a, double b) { return __dmul_rn(a, b); }
HESSEXT_HD float stein_add(float a, float b) { return __fadd_rn(a, b); }
HESSEXT_HD double stein_add(double a, double b) { return __dadd_rn(a, b); }
#else
template <typename T>
HESSEXT_HD T stein_mul(T a, T b) { return a * b; }
template <typename T>
HESSEXT_HD T stein_add(T a, T b) { return a + b; }
#endif

// Four coordinates 4q .. 4q+3 (those below D) of one direction, written as scalar_t.
template <typename scalar_t>
HESSEXT_HD void stein_direction_block(uint64_t seed, uint64_t point, uint64_t pair, int64_t q,
                                      int64_t D, scalar_t* z_row) {
  float z[4];
  philox::normals4(seed, point, pair, uint32_t(q), z);
  const int64_t d0 = 4 * q;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    if (d0 + r < D) z_row[d0 + r] = scalar_t(z[r]);
  }
}

// Four coordinates of the perturbed copies of one point: x +- s z (each rounded once).
template <typename scalar_t>
HESSEXT_HD void stein_perturb_block(uint64_t seed, uint64_t point, uint64_t pair, int64_t q,
                                    int64_t D, scalar_t s, const scalar_t* x_row,
                                    scalar_t* plus_row, scalar_t* minus_row) {
  float z[4];
  philox::normals4(seed, point, pair, uint32_t(q), z);
  const int64_t d0 = 4 * q;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t d = d0 + r;
    if (d < D) {
      const scalar_t step = stein_mul(s, scalar_t(z[r]));
      plus_row[d] = stein_add(x_row[d], step);
      if (minus_row != nullptr) minus_row[d] = stein_add(x_row[d], -step);
    }
  }
}

}  // namespace hessext
