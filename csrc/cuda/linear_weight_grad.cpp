// CUDA glue for hessext::linear_weight_grad: checks, tensor unpacking, current stream.
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

void linear_weight_grad_cuda(const at::Tensor& a_in, const at::Tensor& d_in, at::Tensor out) {
  check_linear_weight_grad_args(a_in, d_in, out);
  const c10::cuda::CUDAGuard guard(a_in.device());
  const auto a = a_in.contiguous();
  const auto d = d_in.contiguous();
  const int64_t N = a.size(0), T = a.size(1), I = a.size(2), O = d.size(2);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_weight_grad_cuda", [&] {
    launch_linear_weight_grad<scalar_t>(a.data_ptr<scalar_t>(), a.stride(0), a.stride(1),
                                        d.data_ptr<scalar_t>(), d.stride(0), d.stride(1),
                                        out.data_ptr<scalar_t>(), out.stride(0), N, T, O, I,
                                        c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("linear_weight_grad", &linear_weight_grad_cuda);
}

}  // namespace hessext
