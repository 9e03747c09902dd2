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

// Rows [begin, end) of y, r = (n*O + o)*Ho + oh.
template <typename scalar_t>
__attribute__((always_inline)) inline void conv_forward_rows(
    const scalar_t* x, const scalar_t* w, const scalar_t* bias, scalar_t* y,
    const ConvGeometry& g, int64_t begin, int64_t end) {
  const int64_t K = g.Cg * g.kH * g.kW;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t oh = r % g.Ho, o = (r / g.Ho) % g.O, n = r / (g.Ho * g.O);
    conv_forward_row(x + n * g.C * g.H * g.W, w + o * K, bias != nullptr ? bias[o] : scalar_t(0),
                     g, o, oh, y + r * g.Wo);
  }
}

// The row axpys compiled twice, for AVX2 + FMA and for the baseline, chosen at load time (the
// package is built without -march): 5.2 -> 3.6 ms on the toolbox CNN's first layer.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HESSEXT_X86_V3_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HESSEXT_X86_V3_CLONES
#endif
HESSEXT_X86_V3_CLONES void conv_forward_rows_cpu(const float* x, const float* w,
                                                 const float* bias, float* y,
                                                 const ConvGeometry& g, int64_t begin,
                                                 int64_t end) {
  conv_forward_rows(x, w, bias, y, g, begin, end);
}
HESSEXT_X86_V3_CLONES void conv_forward_rows_cpu(const double* x, const double* w,
                                                 const double* bias, double* y,
                                                 const ConvGeometry& g, int64_t begin,
                                                 int64_t end) {
  conv_forward_rows(x, w, bias, y, g, begin, end);
}

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
      conv_forward_rows_cpu(x_ptr, w_ptr, b_ptr, y_ptr, g, begin, end);
    });
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("conv_forward", &conv_forward_cpu);
}

}  // namespace hessext
