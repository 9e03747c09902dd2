// CUDA kernels of hessext::kfac_factors (the bias row of A; the products run on
// launch_gemm_accumulate) and hessext::ekfac_correction: one thread per output element running
// the bodies of kernels/kfac.h. Correctness first, like the other element-wise kernels: the
// GEMM-shaped rotations and the square-accumulate are not tiled.
#include <cuda_runtime.h>

#include "cuda/grid.cuh"
#include "cuda/launchers.h"
#include "kernels/kfac.h"

namespace hessext {
namespace {

template <typename scalar_t>
__global__ void kfac_bias_row_kernel(const scalar_t* __restrict__ a, int64_t a_sk, int64_t a_si,
                                     double* __restrict__ A, int64_t K, int64_t I) {
  HESSEXT_GRID_STRIDE(i, I + 1) {
    const int64_t Ia = I + 1;
    if (i == I) {
      A[I * Ia + I] += double(K);
    } else {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k) s += double(a[k * a_sk + i * a_si]);
      A[I * Ia + i] += s;
      A[i * Ia + I] += s;
    }
  }
}

// out [rows, Lq] = [x, 1] q for contiguous rows x [rows, L]
template <typename scalar_t>
__global__ void rotate_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ q,
                              scalar_t* __restrict__ out, int64_t rows, int64_t L, int64_t Lq) {
  HESSEXT_GRID_STRIDE(k, rows * Lq) {
    const int64_t row = k / Lq, j = k % Lq;
    out[k] = rotate_element(x + row * L, L, q, Lq, j);
  }
}

// lam[o, i] += sum_{r, n} (sum_t gt[r, n, t, o] at[n, t, i])^2, in float64
template <typename scalar_t>
__global__ void ekfac_square_kernel(const scalar_t* __restrict__ gt, const scalar_t* __restrict__ at,
                                    double* __restrict__ lam, int64_t R, int64_t N, int64_t T,
                                    int64_t O, int64_t Ia) {
  HESSEXT_GRID_STRIDE(k, O * Ia) {
    const int64_t o = k / Ia, i = k % Ia;
    double total = 0.0;
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t n = 0; n < N; ++n) {
        const double c = double(ekfac_cell(gt + (r * N + n) * T * O, at + n * T * Ia, T, O, Ia, o, i));
        total += c * c;
      }
    }
    lam[k] += total;
  }
}

}  // namespace

template <typename scalar_t>
void launch_kfac_bias_row(const scalar_t* a, int64_t a_stride_k, int64_t a_stride_i, double* A,
                          int64_t K, int64_t I, cudaStream_t stream) {
  kfac_bias_row_kernel<scalar_t><<<grid_for(I + 1), kThreads, 0, stream>>>(a, a_stride_k,
                                                                           a_stride_i, A, K, I);
}

template <typename scalar_t>
void launch_kfac_rotate(const scalar_t* x, const scalar_t* q, scalar_t* out, int64_t rows,
                        int64_t L, int64_t Lq, cudaStream_t stream) {
  if (rows * Lq == 0) return;
  rotate_kernel<scalar_t><<<grid_for(rows * Lq), kThreads, 0, stream>>>(x, q, out, rows, L, Lq);
}

template <typename scalar_t>
void launch_ekfac_square_accumulate(const scalar_t* gt, const scalar_t* at, double* lam,
                                    int64_t R, int64_t N, int64_t T, int64_t O, int64_t Ia,
                                    cudaStream_t stream) {
  if (O * Ia == 0) return;
  ekfac_square_kernel<scalar_t><<<grid_for(O * Ia), kThreads, 0, stream>>>(gt, at, lam, R, N, T,
                                                                          O, Ia);
}

#define HESSEXT_INSTANTIATE_KFAC(T_)                                                           \
  template void launch_kfac_bias_row<T_>(const T_*, int64_t, int64_t, double*, int64_t,         \
                                         int64_t, cudaStream_t);                                \
  template void launch_kfac_rotate<T_>(const T_*, const T_*, T_*, int64_t, int64_t, int64_t,    \
                                       cudaStream_t);                                           \
  template void launch_ekfac_square_accumulate<T_>(const T_*, const T_*, double*, int64_t,      \
                                                   int64_t, int64_t, int64_t, int64_t,          \
                                                   cudaStream_t);
HESSEXT_INSTANTIATE_KFAC(float)
HESSEXT_INSTANTIATE_KFAC(double)
#undef HESSEXT_INSTANTIATE_KFAC

}  // namespace hessext
