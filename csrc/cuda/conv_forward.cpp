// CUDA glue for conv_forward: checks (shared with the CPU kernel), tensor unpacking, current
// stream.
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

at::Tensor conv_forward_cuda(const at::Tensor& x_in, const at::Tensor& w_in,
                             const c10::optional<at::Tensor>& bias_in, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const ConvGeometry g = check_conv_forward_args(x_in, w_in, bias_in, stride, padding, dilation,
                                                 groups);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto x = x_in.contiguous();
  const auto w = w_in.contiguous();
  const auto bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  auto y = at::empty({x.size(0), g.O, g.Ho, g.Wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_forward_cuda", [&] {
    launch_conv_forward<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                  bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
                                  y.data_ptr<scalar_t>(), x.size(0), g,
                                  c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("conv_forward", &conv_forward_cuda);
}

}  // namespace hessext
