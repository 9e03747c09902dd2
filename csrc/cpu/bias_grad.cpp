// CPU implementation of hessext::bias_grad (shapes in kernels/bias_grad.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "kernels/bias_grad.h"

namespace hessext {
namespace {

void bias_grad_cpu(const at::Tensor& d, at::Tensor out) {
  check_bias_grad_args(d, out);
  const int64_t N = d.size(0), T = d.size(1), O = d.size(2);
  if (N == 0 || O == 0) return;
  // d is read through its own strides: a Conv's [N, O, T] gradient arrives as a transposed view
  // and is summed along its contiguous axis without a copy.
  const int64_t sn = d.stride(0), st = d.stride(1), so = d.stride(2), out_sn = out.stride(0);
  AT_DISPATCH_FLOATING_TYPES(d.scalar_type(), "bias_grad_cpu", [&] {
    const scalar_t* d_ptr = d.data_ptr<scalar_t>();
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    at::parallel_for(0, N * O, 16, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        const int64_t n = k / O, o = k % O;
        out_ptr[n * out_sn + o] = bias_grad_element(d_ptr + n * sn, st, so, T, o);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("bias_grad", &bias_grad_cpu);
}

}  // namespace hessext
