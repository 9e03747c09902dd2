// CUDA glue for hessext::bias_grad: checks (shared with the CPU kernel), tensor unpacking,
// current stream.
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

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("bias_grad", &bias_grad_cuda);
}

}  // namespace hessext
