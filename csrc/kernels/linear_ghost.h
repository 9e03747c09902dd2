// "Ghost" contractions of the per-sample weight gradients of a Linear layer without a sequence
// axis, g_n = vec(d_n a_n^T) (row-major over [O, I]), computed without forming any g_n:
//
//   matvec   out[n, m]        = sum_{o,i} d[n, o] a[n, i] v[o*I + i, m]       (G v)
//   rmatvec  out[o*I + i, m]  = sum_n     d[n, o] a[n, i] u[n, m]             (G^T u)
//   sqnorms  out[n]           = |a_n|^2 |d_n|^2                               (|g_n|^2)
//   gram     out[n, k]        = (a_n . a_k) (d_n . d_k)                       (G G^T)
//
// a: layer inputs [N, I]; d: output gradients [N, O]; v: [O*I, M]; u: [N, M]; all contiguous.
// The CPU kernels use GEMMs (at::mm); these element bodies are what the CUDA kernels run (one
// thread per output element), and the CPU tests compare both against the same reference.
#pragma once
#include "common.h"

namespace hessext {

template <typename scalar_t>
HESSEXT_HD scalar_t linear_ghost_matvec_element(const scalar_t* a, const scalar_t* d,
                                                const scalar_t* v, int64_t O, int64_t I,
                                                int64_t M, int64_t n, int64_t m) {
  scalar_t acc = scalar_t(0);
  for (int64_t o = 0; o < O; ++o) {
    scalar_t inner = scalar_t(0);
    for (int64_t i = 0; i < I; ++i) inner += a[n * I + i] * v[(o * I + i) * M + m];
    acc += d[n * O + o] * inner;
  }
  return acc;
}

template <typename scalar_t>
HESSEXT_HD scalar_t linear_ghost_rmatvec_element(const scalar_t* a, const scalar_t* d,
                                                 const scalar_t* u, int64_t N, int64_t O,
                                                 int64_t I, int64_t M, int64_t o, int64_t i,
                                                 int64_t m) {
  scalar_t acc = scalar_t(0);
  for (int64_t n = 0; n < N; ++n) acc += d[n * O + o] * a[n * I + i] * u[n * M + m];
  return acc;
}

template <typename scalar_t>
HESSEXT_HD scalar_t dot_rows(const scalar_t* x, int64_t len, int64_t r, int64_t s) {
  scalar_t acc = scalar_t(0);
  for (int64_t k = 0; k < len; ++k) acc += x[r * len + k] * x[s * len + k];
  return acc;
}

template <typename scalar_t>
HESSEXT_HD scalar_t linear_ghost_gram_element(const scalar_t* a, const scalar_t* d, int64_t O,
                                              int64_t I, int64_t n, int64_t k) {
  return dot_rows(a, I, n, k) * dot_rows(d, O, n, k);
}

}  // namespace hessext
