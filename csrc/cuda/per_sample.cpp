// CUDA glue for the per-sample gradient ops: checks (shared with the CPU kernels), tensor
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

void bias_grad_cuda(const at::Tensor& d, at::Tensor out) {
  check_bias_grad_args(d, out);
  const c10::cuda::CUDAGuard guard(d.device());
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "bias_grad_cuda", [&] {
    launch_bias_grad<scalar_t>(d.data_ptr<scalar_t>(), d.stride(0), d.stride(1), d.stride(2),
                               out.data_ptr<scalar_t>(), out.stride(0), d.size(0), d.size(1),
                               d.size(2), c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor linear_ghost_matvec_cuda(const at::Tensor& a_in, const at::Tensor& d_in,
                                    const at::Tensor& v_in) {
  check_linear_ghost_matvec_args(a_in, d_in, v_in);
  const int64_t N = a_in.size(0), I = a_in.size(1), O = d_in.size(1);
  const c10::cuda::CUDAGuard guard(a_in.device());
  const auto a = a_in.contiguous(), d = d_in.contiguous(), v = v_in.contiguous();
  auto out = at::empty({N, v.size(1)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_ghost_matvec_cuda", [&] {
    launch_linear_ghost_matvec<scalar_t>(a.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
                                         v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, O,
                                         I, v.size(1), c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor linear_ghost_rmatvec_cuda(const at::Tensor& a_in, const at::Tensor& d_in,
                                     const at::Tensor& u_in) {
  check_linear_ghost_rmatvec_args(a_in, d_in, u_in);
  const int64_t N = a_in.size(0), I = a_in.size(1), O = d_in.size(1);
  const c10::cuda::CUDAGuard guard(a_in.device());
  const auto a = a_in.contiguous(), d = d_in.contiguous(), u = u_in.contiguous();
  auto out = at::empty({O * I, u.size(1)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_ghost_rmatvec_cuda", [&] {
    launch_linear_ghost_rmatvec<scalar_t>(a.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
                                          u.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N,
                                          O, I, u.size(1), c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor linear_ghost_sqnorms_cuda(const at::Tensor& a_in, const at::Tensor& d_in) {
  check_linear_ghost_args("linear_ghost_sqnorms", a_in, d_in);
  const c10::cuda::CUDAGuard guard(a_in.device());
  const auto a = a_in.contiguous(), d = d_in.contiguous();
  auto out = at::empty({a.size(0)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_ghost_sqnorms_cuda", [&] {
    launch_linear_ghost_sqnorms<scalar_t>(a.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
                                          out.data_ptr<scalar_t>(), a.size(0), d.size(1),
                                          a.size(1), c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor linear_ghost_gram_cuda(const at::Tensor& a_in, const at::Tensor& d_in) {
  check_linear_ghost_args("linear_ghost_gram", a_in, d_in);
  const c10::cuda::CUDAGuard guard(a_in.device());
  const auto a = a_in.contiguous(), d = d_in.contiguous();
  auto out = at::empty({a.size(0), a.size(0)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_ghost_gram_cuda", [&] {
    launch_linear_ghost_gram<scalar_t>(a.data_ptr<scalar_t>(), d.data_ptr<scalar_t>(),
                                       out.data_ptr<scalar_t>(), a.size(0), d.size(1),
                                       a.size(1), c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("conv_weight_grad", &conv_weight_grad_cuda);
  m.impl("bias_grad", &bias_grad_cuda);
  m.impl("linear_ghost_matvec", &linear_ghost_matvec_cuda);
  m.impl("linear_ghost_rmatvec", &linear_ghost_rmatvec_cuda);
  m.impl("linear_ghost_sqnorms", &linear_ghost_sqnorms_cuda);
  m.impl("linear_ghost_gram", &linear_ghost_gram_cuda);
}

}  // namespace hessext
