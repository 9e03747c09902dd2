// CPU implementation of hessext::conv_forward (shapes and summation order in
// kernels/conv_forward.h): output rows in parallel, each built by axpys over its valid columns.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "kernels/conv_forward.h"

namespace hessext {
namespace {

at::Tensor conv_forward_cpu(const at::Tensor& x_in, const at::Tensor& w_in,
                            const c10::optional<at::Tensor>& bias_in, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const ConvGeometry g = check_conv_forward_args(x_in, w_in, bias_in, stride, padding, dilation,
                                                 groups);
  const auto x = x_in.contiguous();
  const auto w = w_in.contiguous();
  const auto bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  const int64_t N = x.size(0);
  auto y = at::empty({N, g.O, g.Ho, g.Wo}, x.options());
  const int64_t rows = N * g.O * g.Ho;
  if (rows == 0 || g.Wo == 0) return y;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_forward_cpu", [&] {
    const scalar_t* x_ptr = x.data_ptr<scalar_t>();
    const scalar_t* w_ptr = w.data_ptr<scalar_t>();
    const scalar_t* b_ptr = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* y_ptr = y.data_ptr<scalar_t>();
    const int64_t K = g.Cg * g.kH * g.kW;
    // enough multiply-adds per task that the parallel loop's overhead does not show
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, K * g.Wo));
    at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t oh = r % g.Ho, o = (r / g.Ho) % g.O, n = r / (g.Ho * g.O);
        conv_forward_row(x_ptr + n * g.C * g.H * g.W, w_ptr + o * K,
                         b_ptr != nullptr ? b_ptr[o] : scalar_t(0), g, o, oh, y_ptr + r * g.Wo);
      }
    });
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("conv_forward", &conv_forward_cpu);
}

}  // namespace hessext
