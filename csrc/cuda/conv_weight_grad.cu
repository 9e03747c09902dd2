// CUDA kernel of hessext::conv_weight_grad: one thread per output element running the body
// shared with the CPU kernel (kernels/conv_weight_grad.h), a grid-stride loop.
#include <cuda_runtime.h>

#include "cuda/grid.cuh"
#include "cuda/launchers.h"
#include "kernels/conv_weight_grad.h"

namespace hessext {
namespace {

template <typename scalar_t>
__global__ void conv_weight_grad_kernel(const scalar_t* __restrict__ x,
                                        const scalar_t* __restrict__ d,
                                        scalar_t* __restrict__ out, int64_t out_stride_n,
                                        int64_t N, ConvGeometry g) {
  const int64_t per_sample = g.O * g.Cg * g.kH * g.kW;
  HESSEXT_GRID_STRIDE(k, N * per_sample) {
    // kw fastest: neighbouring threads write neighbouring outputs
    const int64_t kw = k % g.kW;
    const int64_t kh = (k / g.kW) % g.kH;
    const int64_t c = (k / (g.kW * g.kH)) % g.Cg;
    const int64_t o = (k / (g.kW * g.kH * g.Cg)) % g.O;
    const int64_t n = k / per_sample;
    out[n * out_stride_n + k % per_sample] = conv_weight_grad_element(
        x + n * g.C * g.H * g.W, d + n * g.O * g.Ho * g.Wo, g, o, c, kh, kw);
  }
}

}  // namespace

template <typename scalar_t>
void launch_conv_weight_grad(const scalar_t* x, const scalar_t* d, scalar_t* out,
                             int64_t out_stride_n, int64_t N, const ConvGeometry& g,
                             cudaStream_t stream) {
  const int64_t total = N * g.O * g.Cg * g.kH * g.kW;
  if (total == 0) return;
  conv_weight_grad_kernel<scalar_t><<<grid_for(total), kThreads, 0, stream>>>(
      x, d, out, out_stride_n, N, g);
}

#define HESSEXT_INSTANTIATE(T)                                                                    \
  template void launch_conv_weight_grad<T>(const T*, const T*, T*, int64_t, int64_t,              \
                                           const ConvGeometry&, cudaStream_t);
HESSEXT_INSTANTIATE(float)
HESSEXT_INSTANTIATE(double)
#undef HESSEXT_INSTANTIATE

}  // namespace hessext
