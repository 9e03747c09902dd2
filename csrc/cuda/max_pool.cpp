// CUDA glue for max_pool_forward / max_pool_backward: checks (shared with the CPU kernels),
// tensor unpacking, current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/launchers.h"

namespace hessext {
namespace {

std::tuple<at::Tensor, at::Tensor> max_pool_forward_cuda(const at::Tensor& x_in,
                                                         at::IntArrayRef kernel) {
  check_max_pool_forward_args(x_in, kernel);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto y = at::empty({N, C, H / kernel[0], W / kernel[1]}, x.options());
  auto idx = at::empty(y.sizes(), x.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool_forward_cuda", [&] {
    launch_max_pool_forward<scalar_t>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                      idx.data_ptr<uint8_t>(), N * C, H, W, kernel[0], kernel[1],
                                      c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {y, idx};
}

at::Tensor max_pool_backward_cuda(const at::Tensor& dy_in, const at::Tensor& idx_in,
                                  at::IntArrayRef kernel, at::IntArrayRef input_size) {
  check_max_pool_backward_args(dy_in, idx_in, kernel, input_size);
  const c10::cuda::CUDAGuard guard(dy_in.device());
  const auto dy = dy_in.contiguous();
  const auto idx = idx_in.contiguous();
  const int64_t N = dy.size(0), C = dy.size(1), H = input_size[0], W = input_size[1];
  auto dx = at::empty({N, C, H, W}, dy.options());
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "max_pool_backward_cuda", [&] {
    launch_max_pool_backward<scalar_t>(dy.data_ptr<scalar_t>(), idx.data_ptr<uint8_t>(),
                                       dx.data_ptr<scalar_t>(), N * C, H, W, kernel[0],
                                       kernel[1], c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("max_pool_forward", &max_pool_forward_cuda);
  m.impl("max_pool_backward", &max_pool_backward_cuda);
}

}  // namespace hessext
