// Per-sample gradient of a bias added at every position (Linear with a sequence axis, Conv):
//
//   out[n, o] = sum_t d[n, t, o]
//
// d:   back-propagated output gradients, [N, T, O], any strides (a Conv's [N, O, T] gradient
//      is passed transposed, so the sum runs along its contiguous axis)
// out: [N, O], contiguous rows, any sample stride (a column block of the N x P matrix)
#pragma once
#include "common.h"

namespace hessext {

template <typename scalar_t>
HESSEXT_HD scalar_t bias_grad_element(const scalar_t* d_n, int64_t stride_t, int64_t stride_o,
                                      int64_t T, int64_t o) {
  scalar_t acc = scalar_t(0);
  for (int64_t t = 0; t < T; ++t) acc += d_n[t * stride_t + o * stride_o];
  return acc;
}

}  // namespace hessext
