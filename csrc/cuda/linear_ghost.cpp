// CUDA glue for the linear_ghost_* ops: checks (shared with the CPU kernels), tensor
// unpacking, current stream.
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
  m.impl("linear_ghost_matvec", &linear_ghost_matvec_cuda);
  m.impl("linear_ghost_rmatvec", &linear_ghost_rmatvec_cuda);
  m.impl("linear_ghost_sqnorms", &linear_ghost_sqnorms_cuda);
  m.impl("linear_ghost_gram", &linear_ghost_gram_cuda);
}

}  // namespace hessext
