// CUDA kernel of hessext::bias_grad: one thread per (sample, output) running the body shared
// with the CPU (kernels/bias_grad.h), a grid-stride loop.
#include <cuda_runtime.h>

#include "cuda/grid.cuh"
#include "cuda/launchers.h"
#include "kernels/bias_grad.h"

namespace hessext {
namespace {

template <typename scalar_t>
__global__ void bias_grad_kernel(const scalar_t* __restrict__ d, int64_t sn, int64_t st,
                                 int64_t so, scalar_t* __restrict__ out, int64_t out_sn,
                                 int64_t N, int64_t T, int64_t O) {
  HESSEXT_GRID_STRIDE(k, N * O) {
    const int64_t n = k / O, o = k % O;
    out[n * out_sn + o] = bias_grad_element(d + n * sn, st, so, T, o);
  }
}

}  // namespace

template <typename scalar_t>
void launch_bias_grad(const scalar_t* d, int64_t d_stride_n, int64_t d_stride_t,
                      int64_t d_stride_o, scalar_t* out, int64_t out_stride_n, int64_t N,
                      int64_t T, int64_t O, cudaStream_t stream) {
  if (N * O == 0) return;
  bias_grad_kernel<scalar_t><<<grid_for(N * O), kThreads, 0, stream>>>(
      d, d_stride_n, d_stride_t, d_stride_o, out, out_stride_n, N, T, O);
}

#define HESSEXT_INSTANTIATE(T)                                                                    \
  template void launch_bias_grad<T>(const T*, int64_t, int64_t, int64_t, T*, int64_t, int64_t,    \
                                    int64_t, int64_t, cudaStream_t);
HESSEXT_INSTANTIATE(float)
HESSEXT_INSTANTIATE(double)
#undef HESSEXT_INSTANTIATE

}  // namespace hessext
