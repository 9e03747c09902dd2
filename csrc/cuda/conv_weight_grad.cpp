// CUDA glue for hessext::conv_weight_grad: checks (shared with the CPU kernel), tensor
// unpacking, current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"
#include "cuda/launchers.h"
#include "kernels/conv_weight_grad.h"

namespace hessext {
namespace {

void conv_weight_grad_cuda(const at::Tensor& x_in, const at::Tensor& d_in, at::Tensor out,
                           at::IntArrayRef stride, at::IntArrayRef padding,
                           at::IntArrayRef dilation, int64_t groups) {
  check_conv_weight_grad_args(x_in, d_in, out, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const auto d = d_in.contiguous();
  ConvGeometry g{x.size(1), x.size(2), x.size(3), d.size(1), d.size(2), d.size(3),
                 x.size(1) / groups, d.size(1) / groups, out.size(3), out.size(4),
                 stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_weight_grad_cuda", [&] {
    launch_conv_weight_grad<scalar_t>(x.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
                                      out.data_ptr<scalar_t>(), out.stride(0), x.size(0), g,
                                      c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("conv_weight_grad", &conv_weight_grad_cuda);
}

}  // namespace hessext
