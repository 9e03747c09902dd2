// CPU implementation of hessext::linear_weight_grad (schema and shapes in registration.cpp and
// kernels/linear_weight_grad.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "kernels/linear_weight_grad.h"

namespace hessext {
namespace {

void linear_weight_grad_cpu(const at::Tensor& a_in, const at::Tensor& d_in, at::Tensor out) {
  check_linear_weight_grad_args(a_in, d_in, out);
  const auto a = a_in.contiguous();
  const auto d = d_in.contiguous();
  const int64_t N = a.size(0), T = a.size(1), I = a.size(2), O = d.size(2);
  if (N == 0 || O == 0 || I == 0) return;
  const int64_t out_stride_n = out.stride(0);

  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_weight_grad_cpu", [&] {
    const scalar_t* a_ptr = a.data_ptr<scalar_t>();
    const scalar_t* d_ptr = d.data_ptr<scalar_t>();
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    if (T == 1) {
      // Outer product d_n a_n^T: memory bound, so one pass writing each output once.
      at::parallel_for(0, N * O, 64, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          const int64_t n = k / O, o = k % O;
          const scalar_t dv = d_ptr[n * O + o];
          const scalar_t* a_n = a_ptr + n * I;
          scalar_t* row = out_ptr + n * out_stride_n + o * I;
          for (int64_t i = 0; i < I; ++i) row[i] = dv * a_n[i];
        }
      });
    } else {
      // Sum over positions: one small GEMM per sample, d_n^T a_n, straight into the output
      // block. Inside at::parallel_for the BLAS call runs single-threaded.
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          auto out_n = out.select(0, n);
          at::mm_out(out_n, d.select(0, n).t(), a.select(0, n));
        }
      });
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("linear_weight_grad", &linear_weight_grad_cpu);
}

}  // namespace hessext
