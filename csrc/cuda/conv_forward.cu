// CUDA kernel of conv_forward: one thread per output element running the body shared with the
// CPU kernel (kernels/conv_forward.h), which adds the same terms in the same order.
#include <cuda_runtime.h>

#include "cuda/grid.cuh"
#include "cuda/launchers.h"
#include "kernels/conv_forward.h"

namespace hessext {
namespace {

template <typename scalar_t>
__global__ void conv_forward_kernel(const scalar_t* __restrict__ x,
                                    const scalar_t* __restrict__ w,
                                    const scalar_t* __restrict__ bias, scalar_t* __restrict__ y,
                                    int64_t N, ConvGeometry g) {
  const int64_t K = g.Cg * g.kH * g.kW;
  HESSEXT_GRID_STRIDE(k, N * g.O * g.Ho * g.Wo) {
    const int64_t ow = k % g.Wo, oh = (k / g.Wo) % g.Ho, o = (k / (g.Wo * g.Ho)) % g.O;
    const int64_t n = k / (g.Wo * g.Ho * g.O);
    y[k] = conv_forward_element(x + n * g.C * g.H * g.W, w + o * K,
                                bias != nullptr ? bias[o] : scalar_t(0), g, o, oh, ow);
  }
}

}  // namespace

template <typename scalar_t>
void launch_conv_forward(const scalar_t* x, const scalar_t* w, const scalar_t* bias, scalar_t* y,
                         int64_t N, const ConvGeometry& g, cudaStream_t stream) {
  const int64_t total = N * g.O * g.Ho * g.Wo;
  if (total == 0) return;
  conv_forward_kernel<<<grid_for(total), kThreads, 0, stream>>>(x, w, bias, y, N, g);
}

template void launch_conv_forward<float>(const float*, const float*, const float*, float*,
                                         int64_t, const ConvGeometry&, cudaStream_t);
template void launch_conv_forward<double>(const double*, const double*, const double*, double*,
                                          int64_t, const ConvGeometry&, cudaStream_t);

}  // namespace hessext
