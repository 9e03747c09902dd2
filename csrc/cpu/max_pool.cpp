// CPU implementation of hessext::max_pool_forward / max_pool_backward (shapes and semantics in
// kernels/max_pool.h): planes [n, c] in parallel, each read and written once, in order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "checks.h"
#include "kernels/max_pool.h"

namespace hessext {
namespace {

// enough elements per task that the parallel loop's overhead does not show
int64_t planes_per_task(int64_t plane_elements) {
  return std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, plane_elements));
}

std::tuple<at::Tensor, at::Tensor> max_pool_forward_cpu(const at::Tensor& x_in,
                                                        at::IntArrayRef kernel) {
  check_max_pool_forward_args(x_in, kernel);
  const auto x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t kH = kernel[0], kW = kernel[1], Ho = H / kH, Wo = W / kW;
  auto y = at::empty({N, C, Ho, Wo}, x.options());
  auto idx = at::empty({N, C, Ho, Wo}, x.options().dtype(at::kByte));
  if (y.numel() == 0) return {y, idx};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool_forward_cpu", [&] {
    const scalar_t* x_ptr = x.data_ptr<scalar_t>();
    scalar_t* y_ptr = y.data_ptr<scalar_t>();
    uint8_t* idx_ptr = idx.data_ptr<uint8_t>();
    at::parallel_for(0, N * C, planes_per_task(H * W), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> best(Wo);
      std::vector<int32_t> best_at(Wo);
      for (int64_t p = begin; p < end; ++p) {
        for (int64_t oh = 0; oh < Ho; ++oh) {
          const int64_t o = (p * Ho + oh) * Wo;
          max_pool_row(x_ptr + p * H * W, W, oh, Wo, kH, kW, best.data(), best_at.data(),
                       y_ptr + o, idx_ptr + o);
        }
      }
    });
  });
  return {y, idx};
}

at::Tensor max_pool_backward_cpu(const at::Tensor& dy_in, const at::Tensor& idx_in,
                                 at::IntArrayRef kernel, at::IntArrayRef input_size) {
  check_max_pool_backward_args(dy_in, idx_in, kernel, input_size);
  const auto dy = dy_in.contiguous();
  const auto idx = idx_in.contiguous();
  const int64_t N = dy.size(0), C = dy.size(1), Ho = dy.size(2), Wo = dy.size(3);
  const int64_t H = input_size[0], W = input_size[1], kH = kernel[0], kW = kernel[1];
  auto dx = at::empty({N, C, H, W}, dy.options());
  if (dx.numel() == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "max_pool_backward_cpu", [&] {
    const scalar_t* dy_ptr = dy.data_ptr<scalar_t>();
    const uint8_t* idx_ptr = idx.data_ptr<uint8_t>();
    scalar_t* dx_ptr = dx.data_ptr<scalar_t>();
    at::parallel_for(0, N * C, planes_per_task(H * W), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        for (int64_t oh = 0; oh < Ho; ++oh) {
          max_pool_grad_block(dy_ptr + (p * Ho + oh) * Wo, idx_ptr + (p * Ho + oh) * Wo, Ho, Wo,
                              kH, kW, H, W, oh, dx_ptr + p * H * W);
        }
      }
    });
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(hessext, CPU, m) {
  m.impl("max_pool_forward", &max_pool_forward_cpu);
  m.impl("max_pool_backward", &max_pool_backward_cpu);
}

}  // namespace hessext
