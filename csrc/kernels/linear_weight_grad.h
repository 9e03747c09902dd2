// Per-sample gradient of a Linear layer's weight, y = W a + b, W: [O, I].
//
//   out[n, o, i] = sum_t d[n, t, o] * a[n, t, i]
//
// a:   activations (layer inputs),          [N, T, I], inner dim contiguous
// d:   back-propagated output gradients,    [N, T, O], inner dim contiguous
// out: per-sample weight gradients,         [N, O, I], rows contiguous, any sample stride
//      (so it can be a column block of the N x P per-sample gradient matrix)
#pragma once
#include "common.h"

namespace hessext {

// One output element; the CUDA kernel runs one thread per element, the CPU kernel uses it for
// the T > 1 tail and the T == 1 fast path below for the outer product.
template <typename scalar_t>
HESSEXT_HD scalar_t linear_weight_grad_element(const scalar_t* a_n, int64_t a_stride_t,
                                               const scalar_t* d_n, int64_t d_stride_t,
                                               int64_t T, int64_t o, int64_t i) {
  scalar_t acc = scalar_t(0);
  for (int64_t t = 0; t < T; ++t) {
    acc += d_n[t * d_stride_t + o] * a_n[t * a_stride_t + i];
  }
  return acc;
}

}  // namespace hessext
