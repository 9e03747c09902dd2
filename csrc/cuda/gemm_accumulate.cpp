// CUDA glue for hessext::gemm_accumulate: checks, tensor unpacking, current stream.
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

void gemm_accumulate_cuda(at::Tensor acc, const at::Tensor& a, const at::Tensor& b, double alpha) {
  check_gemm_accumulate_args(acc, a, b);
  const c10::cuda::CUDAGuard guard(acc.device());
  const int64_t K = a.size(0), R = a.size(1), S = b.size(1);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "gemm_accumulate_cuda", [&] {
    launch_gemm_accumulate<scalar_t>(acc.data_ptr<double>(), acc.stride(0), acc.stride(1),
                                     a.data_ptr<scalar_t>(), a.stride(0), a.stride(1),
                                     b.data_ptr<scalar_t>(), b.stride(0), b.stride(1), K, R, S,
                                     alpha, c10::cuda::getCurrentCUDAStream());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CUDA, m) {
  m.impl("gemm_accumulate", &gemm_accumulate_cuda);
}

}  // namespace hessext
