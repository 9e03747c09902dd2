// CPU implementation of hessext::conv_weight_grad (schema in registration.cpp, shapes in
// kernels/conv_weight_grad.h).
//
// One sample per task: its patches for one group are unfolded into a per-thread buffer
// [Cg*kH*kW, Ho*Wo] and one GEMM writes d_n,g cols^T straight into the output block. The batch is
// never unfolded as a whole, so the extra memory is one sample's patches per thread.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "kernels/conv_weight_grad.h"

namespace hessext {
namespace {

void conv_weight_grad_cpu(const at::Tensor& x_in, const at::Tensor& d_in, at::Tensor out,
                          at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups) {
  check_conv_weight_grad_args(x_in, d_in, out, stride, padding, dilation, groups);
  const auto x = x_in.contiguous();
  const auto d = d_in.contiguous();
  ConvGeometry g{x.size(1), x.size(2), x.size(3), d.size(1), d.size(2), d.size(3),
                 x.size(1) / groups, d.size(1) / groups, out.size(3), out.size(4),
                 stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
  const int64_t N = x.size(0);
  const int64_t K = g.Cg * g.kH * g.kW, L = g.Ho * g.Wo;
  if (N == 0 || g.O == 0 || K == 0) return;
  if (L == 0) {
    out.zero_();
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_weight_grad_cpu", [&] {
    const scalar_t* x_ptr = x.data_ptr<scalar_t>();
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      auto cols = at::empty({K, L}, x.options());
      scalar_t* cols_ptr = cols.data_ptr<scalar_t>();
      for (int64_t n = begin; n < end; ++n) {
        // [O, K] view of this sample's contiguous block, [O, L] view of its gradients
        auto out_n = out.select(0, n).view({g.O, K});
        auto d_n = d.select(0, n).view({g.O, L});
        for (int64_t grp = 0; grp < groups; ++grp) {
          conv_im2col_sample(x_ptr + n * g.C * g.H * g.W, g, grp, cols_ptr);
          auto out_block = out_n.narrow(0, grp * g.Og, g.Og);
          at::mm_out(out_block, d_n.narrow(0, grp * g.Og, g.Og), cols.t());
        }
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("conv_weight_grad", &conv_weight_grad_cpu);
}

}  // namespace hessext
