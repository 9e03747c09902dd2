// CUDA kernels of max_pool_forward / max_pool_backward: one thread per output element
// (forward) and per output row of windows (backward), running the bodies shared with the CPU
// kernels (kernels/max_pool.h).
#include <cuda_runtime.h>

#include "cuda/grid.cuh"
#include "cuda/launchers.h"
#include "kernels/max_pool.h"

namespace hessext {
namespace {

template <typename scalar_t>
__global__ void max_pool_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                        uint8_t* __restrict__ idx, int64_t planes, int64_t H,
                                        int64_t W, int64_t kH, int64_t kW) {
  const int64_t Ho = H / kH, Wo = W / kW;
  HESSEXT_GRID_STRIDE(k, planes * Ho * Wo) {
    const int64_t ow = k % Wo, oh = (k / Wo) % Ho, p = k / (Ho * Wo);
    max_pool_window(x + p * H * W, W, oh, ow, kH, kW, y + k, idx + k);
  }
}

template <typename scalar_t>
__global__ void max_pool_backward_kernel(const scalar_t* __restrict__ dy,
                                         const uint8_t* __restrict__ idx,
                                         scalar_t* __restrict__ dx, int64_t planes, int64_t H,
                                         int64_t W, int64_t kH, int64_t kW) {
  const int64_t Ho = H / kH, Wo = W / kW;
  HESSEXT_GRID_STRIDE(k, planes * Ho) {
    const int64_t oh = k % Ho, p = k / Ho;
    max_pool_grad_block(dy + k * Wo, idx + k * Wo, Ho, Wo, kH, kW, H, W, oh, dx + p * H * W);
  }
}

}  // namespace

template <typename scalar_t>
void launch_max_pool_forward(const scalar_t* x, scalar_t* y, uint8_t* idx, int64_t planes,
                             int64_t H, int64_t W, int64_t kH, int64_t kW, cudaStream_t stream) {
  const int64_t total = planes * (H / kH) * (W / kW);
  if (total == 0) return;
  max_pool_forward_kernel<<<grid_for(total), kThreads, 0, stream>>>(x, y, idx, planes, H, W, kH,
                                                                     kW);
}

template <typename scalar_t>
void launch_max_pool_backward(const scalar_t* dy, const uint8_t* idx, scalar_t* dx,
                              int64_t planes, int64_t H, int64_t W, int64_t kH, int64_t kW,
                              cudaStream_t stream) {
  const int64_t total = planes * (H / kH);
  if (total == 0 || W == 0) return;
  max_pool_backward_kernel<<<grid_for(total), kThreads, 0, stream>>>(dy, idx, dx, planes, H, W,
                                                                      kH, kW);
}

#define HESSEXT_INSTANTIATE(T)                                                                 \
  template void launch_max_pool_forward<T>(const T*, T*, uint8_t*, int64_t, int64_t, int64_t,  \
                                           int64_t, int64_t, cudaStream_t);                     \
  template void launch_max_pool_backward<T>(const T*, const uint8_t*, T*, int64_t, int64_t,    \
                                            int64_t, int64_t, int64_t, cudaStream_t);
HESSEXT_INSTANTIATE(float)
HESSEXT_INSTANTIATE(double)
#undef HESSEXT_INSTANTIATE

}  // namespace hessext
