// CUDA kernel for hessext::linear_weight_grad: one thread per output element, the body shared
// with the CPU kernel (kernels/linear_weight_grad.h).
#include <cuda_runtime.h>

#include "cuda/launchers.h"
#include "kernels/linear_weight_grad.h"

namespace hessext {
namespace {

template <typename scalar_t>
__global__ void linear_weight_grad_kernel(const scalar_t* __restrict__ a, int64_t a_stride_n,
                                          int64_t a_stride_t, const scalar_t* __restrict__ d,
                                          int64_t d_stride_n, int64_t d_stride_t,
                                          scalar_t* __restrict__ out, int64_t out_stride_n,
                                          int64_t N, int64_t T, int64_t O, int64_t I) {
  const int64_t total = N * O * I;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    // i fastest so that neighbouring threads read neighbouring activations and write
    // neighbouring outputs (coalesced).
    const int64_t i = k % I;
    const int64_t o = (k / I) % O;
    const int64_t n = k / (I * O);
    out[n * out_stride_n + o * I + i] = linear_weight_grad_element(
        a + n * a_stride_n, a_stride_t, d + n * d_stride_n, d_stride_t, T, o, i);
  }
}

}  // namespace

template <typename scalar_t>
void launch_linear_weight_grad(const scalar_t* a, int64_t a_stride_n, int64_t a_stride_t,
                               const scalar_t* d, int64_t d_stride_n, int64_t d_stride_t,
                               scalar_t* out, int64_t out_stride_n, int64_t N, int64_t T,
                               int64_t O, int64_t I, cudaStream_t stream) {
  const int64_t total = N * O * I;
  if (total == 0) return;
  const int threads = 256;
  const int64_t want = (total + threads - 1) / threads;
  const int blocks = int(want < 65535 ? want : 65535);
  linear_weight_grad_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
      a, a_stride_n, a_stride_t, d, d_stride_n, d_stride_t, out, out_stride_n, N, T, O, I);
}

template void launch_linear_weight_grad<float>(const float*, int64_t, int64_t, const float*,
                                               int64_t, int64_t, float*, int64_t, int64_t,
                                               int64_t, int64_t, int64_t, cudaStream_t);
template void launch_linear_weight_grad<double>(const double*, int64_t, int64_t, const double*,
                                                int64_t, int64_t, double*, int64_t, int64_t,
                                                int64_t, int64_t, int64_t, cudaStream_t);

}  // namespace hessext
