// K-FAC factors and the EK-FAC eigenvalue correction (Martens & Grosse 2015; George et al. 2018).
//
// kfac_factors: for a layer with inputs a (rows: examples x positions, bias as an appended 1)
// and output gradients g, add the unnormalised Kronecker factors
//
//   A[I', I'] += sum_k a'_k a'_k^T,   a'_k = [a_k, 1] (append_one) or a_k,     a: [Ka, I]
//   S[O, O]   += sum_k g_k g_k^T,                                               g: [Kg, O]
//
// in float64 without forming any per-sample gradient. The bias row and column of A are the
// column sums of a and the count Ka.
//
// ekfac_correction: with the factors' eigenvectors Q_A [I', I'] and Q_S [O, O], add the second
// moments of the per-example gradients in the Kronecker eigenbasis,
//
//   lam[o, i] += sum_{r, n} ( sum_t (Q_S^T g_{r,n,t})_o (Q_A^T a'_{n,t})_i )^2
//
// a: [N, T, I] inputs, g: [R*N, T, O] output gradients of R seed-major replicas that share the
// inputs (R = 1: the empirical Fisher; R > 1: the columns of a loss-Hessian factor). With
// T = 1 (a Linear layer without a sequence axis) the per-example gradient is rank one and the
// sum is (sum_r g~^2)^T (a~^2): O(N (O^2 + I'^2 + O I')) instead of rotating N materialised
// [O, I'] gradients. With T > 1 (convolutions: positions; sequences) the rotated per-example
// gradient is g~_{r,n}^T a~_n, a product over T.
#pragma once
#include "common.h"

namespace hessext {

// (Q^T x)_j for one row x [L] of contiguous length L, column j of Q [L', L'] (row-major), with
// an appended 1 when L' = L + 1: the rotation of one input or gradient row.
template <typename scalar_t>
HESSEXT_HD scalar_t rotate_element(const scalar_t* x, int64_t L, const scalar_t* q, int64_t Lq,
                                   int64_t j) {
  scalar_t acc = scalar_t(0);
  for (int64_t l = 0; l < L; ++l) acc += x[l] * q[l * Lq + j];
  if (Lq > L) acc += q[L * Lq + j];
  return acc;
}

// One cell of one rotated per-example gradient: sum_t gt[t, o] at[t, i] for rotated rows
// gt [T, O] and at [T, I'] (contiguous).
template <typename scalar_t>
HESSEXT_HD scalar_t ekfac_cell(const scalar_t* gt, const scalar_t* at, int64_t T, int64_t O,
                               int64_t Ia, int64_t o, int64_t i) {
  scalar_t acc = scalar_t(0);
  for (int64_t t = 0; t < T; ++t) acc += gt[t * O + o] * at[t * Ia + i];
  return acc;
}

}  // namespace hessext
