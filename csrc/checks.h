// Argument checks shared by the CPU and CUDA implementations of each op, so that both devices
// reject the same inputs with the same message. Every message names the op and the value.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace hessext {

inline void check_linear_weight_grad_args(const at::Tensor& a, const at::Tensor& d,
                                          const at::Tensor& out) {
  TORCH_CHECK(a.dim() == 3, "linear_weight_grad: a must be [N, T, I], got ", a.sizes());
  TORCH_CHECK(d.dim() == 3, "linear_weight_grad: d must be [N, T, O], got ", d.sizes());
  TORCH_CHECK(out.dim() == 3, "linear_weight_grad: out must be [N, O, I], got ", out.sizes());
  TORCH_CHECK(a.size(0) == d.size(0) && a.size(1) == d.size(1),
              "linear_weight_grad: a ", a.sizes(), " and d ", d.sizes(),
              " disagree in N or T");
  TORCH_CHECK(out.size(0) == a.size(0) && out.size(1) == d.size(2) && out.size(2) == a.size(2),
              "linear_weight_grad: out must be [N, O, I] = [", a.size(0), ", ", d.size(2), ", ",
              a.size(2), "], got ", out.sizes());
  TORCH_CHECK(a.scalar_type() == d.scalar_type() && a.scalar_type() == out.scalar_type(),
              "linear_weight_grad: dtypes differ: a ", a.scalar_type(), ", d ", d.scalar_type(),
              ", out ", out.scalar_type());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "linear_weight_grad: dtype must be float32 or float64, got ", a.scalar_type());
  TORCH_CHECK(a.device() == d.device() && a.device() == out.device(),
              "linear_weight_grad: tensors on different devices: a ", a.device(), ", d ",
              d.device(), ", out ", out.device());
  // out is written in place, usually as a column block of the N x P gradient matrix: rows of
  // length I must be contiguous and follow each other; the sample stride is free.
  TORCH_CHECK(out.size(1) * out.size(2) == 0 || (out.stride(2) == 1 && out.stride(1) == out.size(2)),
              "linear_weight_grad: out must have contiguous [O, I] blocks, got strides ",
              out.strides());
}

}  // namespace hessext

namespace hessext {

inline void check_gemm_accumulate_args(const at::Tensor& acc, const at::Tensor& a,
                                       const at::Tensor& b) {
  TORCH_CHECK(acc.dim() == 2, "gemm_accumulate: acc must be [R, S], got ", acc.sizes());
  TORCH_CHECK(a.dim() == 2, "gemm_accumulate: a must be [K, R], got ", a.sizes());
  TORCH_CHECK(b.dim() == 2, "gemm_accumulate: b must be [K, S], got ", b.sizes());
  TORCH_CHECK(a.size(0) == b.size(0), "gemm_accumulate: a ", a.sizes(), " and b ", b.sizes(),
              " disagree in K");
  TORCH_CHECK(acc.size(0) == a.size(1) && acc.size(1) == b.size(1),
              "gemm_accumulate: acc must be [R, S] = [", a.size(1), ", ", b.size(1), "], got ",
              acc.sizes());
  TORCH_CHECK(acc.scalar_type() == at::kDouble,
              "gemm_accumulate: acc must be float64 (the accumulator), got ", acc.scalar_type());
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "gemm_accumulate: dtypes differ: a ",
              a.scalar_type(), ", b ", b.scalar_type());
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble,
              "gemm_accumulate: a and b must be float32 or float64, got ", a.scalar_type());
  TORCH_CHECK(a.device() == b.device() && a.device() == acc.device(),
              "gemm_accumulate: tensors on different devices: acc ", acc.device(), ", a ",
              a.device(), ", b ", b.device());
}

}  // namespace hessext
