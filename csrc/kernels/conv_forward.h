// Direct 2-D convolution (Conv1d is the H = 1 case), zero padding, any stride, dilation and
// groups, for convolutions with few terms per output (K = C/groups * kH * kW small, such as a
// first layer on one input channel), where torch's CPU path (oneDNN) runs far below the
// machine's rate: 20 ms for the toolbox CNN's Conv1d(1, 5, 15) on 1000 x 924 inputs.
//
//   y[n, o, oh, ow] = bias[o] + sum_{c, kh, kw} w[o, c, kh, kw] x[n, g*Cg + c,
//                                  oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
//   with g = o / Og the group of output channel o, terms outside x's extent absent, and the
//   sum taken in the order bias, then (c, kh, kw) row-major: the CPU row body and the CUDA
//   element body add the same terms in the same order.
//
// x: [N, C, H, W] contiguous; w: [O, Cg, kH, kW] contiguous; bias: [O] or null;
// y: [N, O, Ho, Wo] contiguous. The geometry struct is conv_weight_grad's.
#pragma once
#include "common.h"
#include "kernels/conv_weight_grad.h"

namespace hessext {

// One output element (the CUDA kernel's unit). x_n points at sample n, w_o at w[o].
template <typename scalar_t>
HESSEXT_HD scalar_t conv_forward_element(const scalar_t* x_n, const scalar_t* w_o, scalar_t b,
                                         const ConvGeometry& g, int64_t o, int64_t oh,
                                         int64_t ow) {
  scalar_t acc = b;
  const scalar_t* x_g = x_n + (o / g.Og) * g.Cg * g.H * g.W;
  for (int64_t c = 0; c < g.Cg; ++c) {
    for (int64_t kh = 0; kh < g.kH; ++kh) {
      const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
      if (ih < 0 || ih >= g.H) continue;
      for (int64_t kw = 0; kw < g.kW; ++kw) {
        const int64_t iw = ow * g.sw - g.pw + kw * g.dw;
        if (iw < 0 || iw >= g.W) continue;
        acc += w_o[(c * g.kH + kh) * g.kW + kw] * x_g[(c * g.H + ih) * g.W + iw];
      }
    }
  }
  return acc;
}

// One output row y[n, o, oh, :] (the CPU kernel's unit): the same terms in the same order,
// each as an axpy over the row's valid columns (contiguous at stride 1, vectorised).
template <typename scalar_t>
HESSEXT_HD void conv_forward_row(const scalar_t* __restrict__ x_n,
                                 const scalar_t* __restrict__ w_o, scalar_t b,
                                 const ConvGeometry& g, int64_t o, int64_t oh,
                                 scalar_t* __restrict__ y_row) {
  for (int64_t ow = 0; ow < g.Wo; ++ow) y_row[ow] = b;
  const scalar_t* x_g = x_n + (o / g.Og) * g.Cg * g.H * g.W;
  for (int64_t c = 0; c < g.Cg; ++c) {
    for (int64_t kh = 0; kh < g.kH; ++kh) {
      const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
      if (ih < 0 || ih >= g.H) continue;
      const scalar_t* __restrict__ x_row = x_g + (c * g.H + ih) * g.W;
      for (int64_t kw = 0; kw < g.kW; ++kw) {
        const scalar_t wv = w_o[(c * g.kH + kh) * g.kW + kw];
        const int64_t off = kw * g.dw - g.pw;
        int64_t lo, hi;
        conv_valid_columns(g, off, &lo, &hi);
        if (g.sw == 1) {
          const scalar_t* __restrict__ src = x_row + off;
          HESSEXT_SIMD
          for (int64_t ow = lo; ow < hi; ++ow) y_row[ow] += wv * src[ow];
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) y_row[ow] += wv * x_row[ow * g.sw + off];
        }
      }
    }
  }
}

}  // namespace hessext
