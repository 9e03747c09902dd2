// Per-sample gradient of a 2-D convolution's weight (Conv1d is the H = 1 case), y = W * x:
//
//   out[n, o, c, kh, kw] = sum_{oh, ow} d[n, o, oh, ow] * x[n, g*Cg + c, oh*sh - ph + kh*dh,
//                                                                     ow*sw - pw + kw*dw]
//   with g = o / Og the group of output channel o, Cg = C / groups, Og = O / groups, and x zero
//   outside its H x W extent (zero padding).
//
// x:   layer inputs,                       [N, C, H, W], contiguous
// d:   back-propagated output gradients,   [N, O, Ho, Wo], contiguous
// out: per-sample weight gradients,        [N, O, Cg, kH, kW], contiguous per sample, any
//      sample stride (a column block of the N x P per-sample gradient matrix)
#pragma once
#include <algorithm>

#include "common.h"

namespace hessext {

struct ConvGeometry {
  int64_t C, H, W;       // input channels and extent
  int64_t O, Ho, Wo;     // output channels and extent
  int64_t Cg, Og;        // channels per group (input, output)
  int64_t kH, kW;        // kernel extent
  int64_t sh, sw, ph, pw, dh, dw;
};

// One output element, a direct correlation over the output positions; the CUDA kernel runs one
// thread per element. x_n and d_n point at sample n.
template <typename scalar_t>
HESSEXT_HD scalar_t conv_weight_grad_element(const scalar_t* x_n, const scalar_t* d_n,
                                             const ConvGeometry& g, int64_t o, int64_t c,
                                             int64_t kh, int64_t kw) {
  const int64_t ci = (o / g.Og) * g.Cg + c;
  const scalar_t* x_c = x_n + ci * g.H * g.W;
  const scalar_t* d_o = d_n + o * g.Ho * g.Wo;
  scalar_t acc = scalar_t(0);
  for (int64_t oh = 0; oh < g.Ho; ++oh) {
    const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
    if (ih < 0 || ih >= g.H) continue;
    for (int64_t ow = 0; ow < g.Wo; ++ow) {
      const int64_t iw = ow * g.sw - g.pw + kw * g.dw;
      if (iw < 0 || iw >= g.W) continue;
      acc += d_o[oh * g.Wo + ow] * x_c[ih * g.W + iw];
    }
  }
  return acc;
}

// The output columns [lo, hi) whose input column ow*sw + off (off = kw*dw - pw) lies in [0, W):
// the part of an output row that a kernel column kw sees without padding.
HESSEXT_HD void conv_valid_columns(const ConvGeometry& g, int64_t off, int64_t* lo, int64_t* hi) {
  int64_t a = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
  int64_t b = off < g.W ? (g.W - 1 - off) / g.sw + 1 : 0;
  b = b < g.Wo ? b : g.Wo;
  *lo = a < b ? a : b;
  *hi = b;
}

// The patches of ONE sample and ONE group, cols[(c, kh, kw), (oh, ow)] ([Cg*kH*kW, Ho*Wo]), so
// that the CPU kernel can finish with batched GEMMs over a few samples: out_n,g = d_n,g cols^T.
// Only a per-thread buffer of a few samples' patches is ever alive, never the batch's. Each
// row segment is the valid column range of one input row (a contiguous copy at stride 1)
// between zeros: no bounds test per element.
template <typename scalar_t>
inline void conv_im2col_sample(const scalar_t* x_n, const ConvGeometry& g, int64_t group,
                               scalar_t* cols) {
  const int64_t L = g.Ho * g.Wo;
  for (int64_t c = 0; c < g.Cg; ++c) {
    const scalar_t* x_c = x_n + (group * g.Cg + c) * g.H * g.W;
    for (int64_t kh = 0; kh < g.kH; ++kh) {
      for (int64_t kw = 0; kw < g.kW; ++kw) {
        scalar_t* row = cols + ((c * g.kH + kh) * g.kW + kw) * L;
        const int64_t off = kw * g.dw - g.pw;
        int64_t lo, hi;
        conv_valid_columns(g, off, &lo, &hi);
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
          scalar_t* dst = row + oh * g.Wo;
          if (ih < 0 || ih >= g.H) {
            for (int64_t ow = 0; ow < g.Wo; ++ow) dst[ow] = scalar_t(0);
            continue;
          }
          const scalar_t* src = x_c + ih * g.W + off;
          for (int64_t ow = 0; ow < lo; ++ow) dst[ow] = scalar_t(0);
          if (g.sw == 1) {  // a loop, not std::copy: rows are often ~10 elements long
            HESSEXT_SIMD
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow];
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * g.sw];
          }
          for (int64_t ow = hi; ow < g.Wo; ++ow) dst[ow] = scalar_t(0);
        }
      }
    }
  }
}

// The patches of ONE sample and ONE group for a convolution with stride 1 and no padding, over
// the W-wide positions l = oh*W + ow, l < Lp = (Ho-1)*W + Wo: cols[(c, kh, kw), l] =
// x[c, oh + kh*dh, ow + kw*dw] is one contiguous run of x's plane starting at (kh*dh, kw*dw),
// which ends inside the plane. Positions with ow >= Wo hold the next row's first elements; the
// caller pairs them with zero output gradients.
template <typename scalar_t>
inline void conv_patch_runs_sample(const scalar_t* x_n, const ConvGeometry& g, int64_t group,
                                   int64_t Lp, scalar_t* cols) {
  for (int64_t c = 0; c < g.Cg; ++c) {
    const scalar_t* x_c = x_n + (group * g.Cg + c) * g.H * g.W;
    for (int64_t kh = 0; kh < g.kH; ++kh) {
      for (int64_t kw = 0; kw < g.kW; ++kw) {
        const scalar_t* src = x_c + kh * g.dh * g.W + kw * g.dw;
        std::copy(src, src + Lp, cols + ((c * g.kH + kh) * g.kW + kw) * Lp);
      }
    }
  }
}

// The output gradients of ONE sample and ONE group's Og channels (d_n at the group's first
// channel, [Og, Ho*Wo]) placed on the W-wide positions of conv_patch_runs_sample: row oh at
// oh*W. dst [Og, Lp] must hold zeros at the positions past Wo (they are never written).
template <typename scalar_t>
inline void conv_grad_on_runs_sample(const scalar_t* d_n, const ConvGeometry& g, int64_t Lp,
                                     scalar_t* dst) {
  for (int64_t o = 0; o < g.Og; ++o) {
    const scalar_t* src = d_n + o * g.Ho * g.Wo;
    for (int64_t oh = 0; oh < g.Ho; ++oh) {
      std::copy(src + oh * g.Wo, src + (oh + 1) * g.Wo, dst + o * Lp + oh * g.W);
    }
  }
}

}  // namespace hessext
