// CUDA kernels of the linear_ghost_* ops (matvec, rmatvec, squared norms, Gram): one thread per
// output element running the bodies shared with the CPU kernels (kernels/linear_ghost.h).
// Simple grid-stride loops; correctness first, the GEMM-shaped contractions leave tiling to a
// later pass.
#include <cuda_runtime.h>

#include "cuda/grid.cuh"
#include "cuda/launchers.h"
#include "kernels/linear_ghost.h"

namespace hessext {
namespace {

template <typename scalar_t>
__global__ void linear_ghost_matvec_kernel(const scalar_t* __restrict__ a,
                                           const scalar_t* __restrict__ d,
                                           const scalar_t* __restrict__ v,
                                           scalar_t* __restrict__ out, int64_t N, int64_t O,
                                           int64_t I, int64_t M) {
  HESSEXT_GRID_STRIDE(k, N * M) {
    out[k] = linear_ghost_matvec_element(a, d, v, O, I, M, k / M, k % M);
  }
}

template <typename scalar_t>
__global__ void linear_ghost_rmatvec_kernel(const scalar_t* __restrict__ a,
                                            const scalar_t* __restrict__ d,
                                            const scalar_t* __restrict__ u,
                                            scalar_t* __restrict__ out, int64_t N, int64_t O,
                                            int64_t I, int64_t M) {
  HESSEXT_GRID_STRIDE(k, O * I * M) {
    const int64_t m = k % M, i = (k / M) % I, o = k / (M * I);
    out[k] = linear_ghost_rmatvec_element(a, d, u, N, O, I, M, o, i, m);
  }
}

template <typename scalar_t>
__global__ void linear_ghost_gram_kernel(const scalar_t* __restrict__ a,
                                         const scalar_t* __restrict__ d,
                                         scalar_t* __restrict__ out, int64_t N, int64_t O,
                                         int64_t I, bool diagonal_only) {
  const int64_t total = diagonal_only ? N : N * N;
  HESSEXT_GRID_STRIDE(k, total) {
    const int64_t n = diagonal_only ? k : k / N, j = diagonal_only ? k : k % N;
    out[k] = linear_ghost_gram_element(a, d, O, I, n, j);
  }
}

}  // namespace

template <typename scalar_t>
void launch_linear_ghost_matvec(const scalar_t* a, const scalar_t* d, const scalar_t* v,
                                scalar_t* out, int64_t N, int64_t O, int64_t I, int64_t M,
                                cudaStream_t stream) {
  if (N * M == 0) return;
  linear_ghost_matvec_kernel<scalar_t><<<grid_for(N * M), kThreads, 0, stream>>>(
      a, d, v, out, N, O, I, M);
}

template <typename scalar_t>
void launch_linear_ghost_rmatvec(const scalar_t* a, const scalar_t* d, const scalar_t* u,
                                 scalar_t* out, int64_t N, int64_t O, int64_t I, int64_t M,
                                 cudaStream_t stream) {
  if (O * I * M == 0) return;
  linear_ghost_rmatvec_kernel<scalar_t><<<grid_for(O * I * M), kThreads, 0, stream>>>(
      a, d, u, out, N, O, I, M);
}

template <typename scalar_t>
void launch_linear_ghost_sqnorms(const scalar_t* a, const scalar_t* d, scalar_t* out, int64_t N,
                                 int64_t O, int64_t I, cudaStream_t stream) {
  if (N == 0) return;
  linear_ghost_gram_kernel<scalar_t><<<grid_for(N), kThreads, 0, stream>>>(a, d, out, N, O, I,
                                                                          true);
}

template <typename scalar_t>
void launch_linear_ghost_gram(const scalar_t* a, const scalar_t* d, scalar_t* out, int64_t N,
                              int64_t O, int64_t I, cudaStream_t stream) {
  if (N == 0) return;
  linear_ghost_gram_kernel<scalar_t><<<grid_for(N * N), kThreads, 0, stream>>>(a, d, out, N, O,
                                                                              I, false);
}

#define HESSEXT_INSTANTIATE(T)                                                                    \
  template void launch_linear_ghost_matvec<T>(const T*, const T*, const T*, T*, int64_t,          \
                                              int64_t, int64_t, int64_t, cudaStream_t);           \
  template void launch_linear_ghost_rmatvec<T>(const T*, const T*, const T*, T*, int64_t,         \
                                               int64_t, int64_t, int64_t, cudaStream_t);          \
  template void launch_linear_ghost_sqnorms<T>(const T*, const T*, T*, int64_t, int64_t,          \
                                               int64_t, cudaStream_t);                            \
  template void launch_linear_ghost_gram<T>(const T*, const T*, T*, int64_t, int64_t, int64_t,    \
                                            cudaStream_t);
HESSEXT_INSTANTIATE(float)
HESSEXT_INSTANTIATE(double)
#undef HESSEXT_INSTANTIATE

}  // namespace hessext
