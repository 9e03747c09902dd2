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
  const int64_t N = d.size(0), O = d.size(2);
  if (N == 0 || O == 0) return;
  // torch's reduction kernel is vectorised for either layout (a Linear's [N, T, O] and a Conv's
  // transposed [N, O, T] view) and writes straight into the strided column block.
  at::sum_out(out, d, {1});
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("bias_grad", &bias_grad_cpu);
}

}  // namespace hessext
