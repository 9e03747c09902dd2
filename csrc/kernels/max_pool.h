// Max pooling whose window equals its stride (no padding, dilation 1, floor mode): the pooling
// of the common CNN blocks (MaxPool2d(2), MaxPool1d(4)), run in the per-sample capture's forward
// pass. torch's CPU max_pool2d_with_indices spends ~3 ns per input element on these shapes
// (13 ms of the toolbox CNN's forward for one 1000 x 5 x 912 pooling); here every input element
// is read once, in order.
//
//   y[n, c, oh, ow]   = max of the window x[n, c, oh*kH + i, ow*kW + j], NaN propagating
//   idx[n, c, oh, ow] = i*kW + j of the first maximum (of the last NaN): torch's choice
//   backward: dx[n, c, h, w] = dy[n, c, h/kH, w/kW] where (h%kH)*kW + w%kW is that index, and
//   0 elsewhere, also in the rows and columns the floor mode leaves out.
//
// x, dx: [N, C, H, W] contiguous; y, dy, idx: [N, C, Ho, Wo] contiguous, Ho = H/kH, Wo = W/kW;
// idx is uint8 (kH*kW <= 256).
#pragma once
#include <cmath>

#include "common.h"

namespace hessext {

// The update of one window by element v at window index k: strict > keeps the first maximum,
// v != v lets a NaN win (and a later NaN replace it), as in torch.
template <typename scalar_t>
HESSEXT_HD bool max_pool_takes(scalar_t v, scalar_t best) {
  return (v > best) | (v != v);
}

// One output element (the CUDA kernel's unit); x_plane points at x[n, c].
template <typename scalar_t>
HESSEXT_HD void max_pool_window(const scalar_t* x_plane, int64_t W, int64_t oh, int64_t ow,
                                int64_t kH, int64_t kW, scalar_t* value, uint8_t* index) {
  scalar_t best = -scalar_t(INFINITY);
  int32_t best_at = 0;
  const scalar_t* row = x_plane + oh * kH * W + ow * kW;
  for (int64_t i = 0; i < kH; ++i, row += W) {
    for (int64_t j = 0; j < kW; ++j) {
      const bool take = max_pool_takes(row[j], best);
      best = take ? row[j] : best;
      best_at = take ? int32_t(i * kW + j) : best_at;
    }
  }
  *value = best;
  *index = uint8_t(best_at);
}

// One output row (the CPU kernel's unit): the same updates in the same order per window, with
// the windows of the row in the innermost loop, vectorised as selects. (As branches, which
// the compiler otherwise emits, the coin-flip comparison mispredicted so often that the kernel
// was no faster than torch's.) best and best_at are scratch of length Wo.
template <typename scalar_t>
HESSEXT_HD void max_pool_row(const scalar_t* __restrict__ x_plane, int64_t W, int64_t oh,
                             int64_t Wo, int64_t kH, int64_t kW, scalar_t* __restrict__ best,
                             int32_t* __restrict__ best_at, scalar_t* __restrict__ y_row,
                             uint8_t* __restrict__ idx_row) {
  for (int64_t ow = 0; ow < Wo; ++ow) {
    best[ow] = -scalar_t(INFINITY);
    best_at[ow] = 0;
  }
  for (int64_t i = 0; i < kH; ++i) {
    const scalar_t* __restrict__ row = x_plane + (oh * kH + i) * W;
    for (int64_t j = 0; j < kW; ++j) {
      const int32_t k = int32_t(i * kW + j);
      HESSEXT_SIMD
      for (int64_t ow = 0; ow < Wo; ++ow) {
        const scalar_t v = row[ow * kW + j];
        const bool take = max_pool_takes(v, best[ow]);
        best[ow] = take ? v : best[ow];
        best_at[ow] = take ? k : best_at[ow];
      }
    }
  }
  for (int64_t ow = 0; ow < Wo; ++ow) {
    y_row[ow] = best[ow];
    idx_row[ow] = uint8_t(best_at[ow]);
  }
}

// One output row oh of windows, backward (the CUDA kernel's unit; the CPU op fills whole planes
// and finds each window's element in a table of offsets): writes the kH rows of dx it covers
// (the last one also the rows the floor mode left out) in the plane dx_plane = dx[n, c]: zeros,
// then one store per window at its chosen element. dy_row and idx_row point at [n, c, oh] of
// dy, idx; the indices are window positions (checked by check_max_pool_backward_args).
template <typename scalar_t>
HESSEXT_HD void max_pool_grad_block(const scalar_t* __restrict__ dy_row,
                                    const uint8_t* __restrict__ idx_row, int64_t Ho, int64_t Wo,
                                    int64_t kH, int64_t kW, int64_t H, int64_t W, int64_t oh,
                                    scalar_t* __restrict__ dx_plane) {
  const int64_t h0 = oh * kH, h1 = oh + 1 == Ho ? H : h0 + kH;
  scalar_t* __restrict__ block = dx_plane + h0 * W;
  for (int64_t e = 0; e < (h1 - h0) * W; ++e) block[e] = scalar_t(0);
  const int32_t kw = int32_t(kW);
  for (int64_t ow = 0; ow < Wo; ++ow) {
    const int32_t k = idx_row[ow], i = k / kw;
    block[i * W + ow * kW + (k - i * kw)] = dy_row[ow];
  }
}

}  // namespace hessext
