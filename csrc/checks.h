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

#include <cmath>

namespace hessext {

// stein_perturb: x [B, D] float32/float64; sigma > 0 (a variance); n_pairs >= 0.
inline void check_stein_perturb_args(const at::Tensor& x, double sigma, int64_t seed,
                                     int64_t point_offset, int64_t pair_offset,
                                     int64_t n_pairs) {
  TORCH_CHECK(x.dim() == 2, "stein_perturb: x must be [B, D], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "stein_perturb: dtype must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(sigma > 0 && std::isfinite(sigma),
              "stein_perturb: sigma (a variance) must be finite and > 0, got ", sigma);
  TORCH_CHECK(point_offset >= 0 && pair_offset >= 0 && n_pairs >= 0,
              "stein_perturb: point_offset, pair_offset, n_pairs must be >= 0, got ",
              point_offset, ", ", pair_offset, ", ", n_pairs);
  TORCH_CHECK(x.size(1) <= (int64_t(1) << 33),
              "stein_perturb: D must be < 2^33 (Philox coordinate counter), got ", x.size(1));
}

// stein_accumulate: h [B, A, P, K] (A = 1 or 2), hess_acc [B, M, D, K] float64 contiguous,
// grad_acc [B, M, K] float64 contiguous, tile_pairs >= 1 dividing pair_offset.
inline void check_stein_accumulate_args(const at::Tensor& h, const at::Tensor& hess_acc,
                                        const at::Tensor& grad_acc, int64_t point_offset,
                                        int64_t pair_offset, int64_t tile_pairs) {
  TORCH_CHECK(h.dim() == 4 && (h.size(1) == 1 || h.size(1) == 2),
              "stein_accumulate: h must be [B, A, P, K] with A = 2 (antithetic) or 1, got ",
              h.sizes());
  TORCH_CHECK(h.scalar_type() == at::kFloat || h.scalar_type() == at::kDouble,
              "stein_accumulate: h dtype must be float32 or float64, got ", h.scalar_type());
  TORCH_CHECK(hess_acc.dim() == 4 && hess_acc.size(0) == h.size(0) &&
                  hess_acc.size(3) == h.size(3) && hess_acc.size(1) >= 1,
              "stein_accumulate: hess_acc must be [B, M, D, K] = [", h.size(0), ", M, D, ",
              h.size(3), "], got ", hess_acc.sizes());
  TORCH_CHECK(grad_acc.dim() == 3 && grad_acc.size(0) == h.size(0) &&
                  grad_acc.size(1) == hess_acc.size(1) && grad_acc.size(2) == h.size(3),
              "stein_accumulate: grad_acc must be [B, M, K] = [", h.size(0), ", ",
              hess_acc.size(1), ", ", h.size(3), "], got ", grad_acc.sizes());
  TORCH_CHECK(hess_acc.scalar_type() == at::kDouble && grad_acc.scalar_type() == at::kDouble,
              "stein_accumulate: accumulators must be float64, got ", hess_acc.scalar_type(),
              " and ", grad_acc.scalar_type());
  TORCH_CHECK(hess_acc.is_contiguous() && grad_acc.is_contiguous(),
              "stein_accumulate: accumulators must be contiguous");
  TORCH_CHECK(h.device() == hess_acc.device() && h.device() == grad_acc.device(),
              "stein_accumulate: tensors on different devices: h ", h.device(), ", hess_acc ",
              hess_acc.device(), ", grad_acc ", grad_acc.device());
  TORCH_CHECK(tile_pairs >= 1, "stein_accumulate: tile_pairs must be >= 1, got ", tile_pairs);
  TORCH_CHECK(point_offset >= 0 && pair_offset >= 0,
              "stein_accumulate: offsets must be >= 0, got ", point_offset, ", ", pair_offset);
  // Tiles are numbered globally so that any chunking gives the same sums in the same order.
  TORCH_CHECK(pair_offset % tile_pairs == 0, "stein_accumulate: pair_offset (", pair_offset,
              ") must be a multiple of tile_pairs (", tile_pairs, ")");
}

// The optional directions of stein_accumulate: [B, P, D] in h's dtype, on h's device.
inline void check_stein_directions_arg(const at::Tensor& h, const at::Tensor& hess_acc,
                                       const at::Tensor& z) {
  TORCH_CHECK(z.dim() == 3 && z.size(0) == h.size(0) && z.size(1) == h.size(2) &&
                  z.size(2) == hess_acc.size(2),
              "stein_accumulate: z must be [B, P, D] = [", h.size(0), ", ", h.size(2), ", ",
              hess_acc.size(2), "], got ", z.sizes());
  TORCH_CHECK(z.scalar_type() == h.scalar_type() && z.device() == h.device(),
              "stein_accumulate: z must have h's dtype and device, got ", z.scalar_type(), " on ",
              z.device());
}

}  // namespace hessext
