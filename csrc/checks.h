// Argument checks shared by the CPU and CUDA implementations of each op, so that both devices
// reject the same inputs with the same message. Every message names the op and the value.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>

#include "kernels/conv_weight_grad.h"  // ConvGeometry

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


// ---- per-sample gradients: conv weights, biases, Linear ghost contractions -------------------

inline void check_float_same(const char* op, std::initializer_list<const at::Tensor*> ts) {
  const at::Tensor& first = **ts.begin();
  TORCH_CHECK(first.scalar_type() == at::kFloat || first.scalar_type() == at::kDouble,
              op, ": dtype must be float32 or float64, got ", first.scalar_type());
  for (const at::Tensor* t : ts) {
    TORCH_CHECK(t->scalar_type() == first.scalar_type(), op, ": dtypes differ: ",
                first.scalar_type(), " vs ", t->scalar_type());
    TORCH_CHECK(t->device() == first.device(), op, ": tensors on different devices: ",
                first.device(), " vs ", t->device());
  }
}

// ---- max pooling with window == stride (kernels/max_pool.h) ----------------------------------

inline void check_max_pool_kernel(const char* op, at::IntArrayRef kernel) {
  TORCH_CHECK(kernel.size() == 2 && kernel[0] >= 1 && kernel[1] >= 1,
              op, ": kernel must be two positive ints, got ", kernel);
  TORCH_CHECK(kernel[0] * kernel[1] <= 256, op, ": the window must hold at most 256 elements "
              "(uint8 indices), got ", kernel);
}

inline void check_max_pool_forward_args(const at::Tensor& x, at::IntArrayRef kernel) {
  TORCH_CHECK(x.dim() == 4, "max_pool_forward: x must be [N, C, H, W], got ", x.sizes());
  check_float_same("max_pool_forward", {&x});
  check_max_pool_kernel("max_pool_forward", kernel);
  TORCH_CHECK(x.size(2) >= kernel[0] && x.size(3) >= kernel[1], "max_pool_forward: the window ",
              kernel, " does not fit in x ", x.sizes());
}

inline void check_max_pool_backward_args(const at::Tensor& dy, const at::Tensor& idx,
                                         at::IntArrayRef kernel, at::IntArrayRef input_size) {
  check_max_pool_kernel("max_pool_backward", kernel);
  TORCH_CHECK(input_size.size() == 2 && input_size[0] >= 0 && input_size[1] >= 0,
              "max_pool_backward: input_size must be two ints (H, W), got ", input_size);
  TORCH_CHECK(dy.dim() == 4 && dy.size(2) == input_size[0] / kernel[0] &&
                  dy.size(3) == input_size[1] / kernel[1],
              "max_pool_backward: grad_out must be [N, C, H/kH, W/kW] for input_size ",
              input_size, " and kernel ", kernel, ", got ", dy.sizes());
  TORCH_CHECK(idx.sizes() == dy.sizes() && idx.scalar_type() == at::kByte,
              "max_pool_backward: indices must be uint8 of grad_out's shape ", dy.sizes(),
              ", got ", idx.scalar_type(), " ", idx.sizes());
  TORCH_CHECK(idx.device() == dy.device(), "max_pool_backward: tensors on different devices: ",
              dy.device(), " vs ", idx.device());
  check_float_same("max_pool_backward", {&dy});
  // indices come from max_pool_forward; any other value would address outside its window
  TORCH_CHECK(idx.numel() == 0 || idx.max().item<uint8_t>() < kernel[0] * kernel[1],
              "max_pool_backward: indices must be window positions below kH*kW = ",
              kernel[0] * kernel[1]);
}

// Output extent of a convolution along one axis (as torch computes it).
inline int64_t conv_out_extent(int64_t in, int64_t k, int64_t s, int64_t p, int64_t dl) {
  return (in + 2 * p - dl * (k - 1) - 1) / s + 1;
}

inline void check_conv_weight_grad_args(const at::Tensor& x, const at::Tensor& d,
                                        const at::Tensor& out, at::IntArrayRef stride,
                                        at::IntArrayRef padding, at::IntArrayRef dilation,
                                        int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "conv_weight_grad: x must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(d.dim() == 4, "conv_weight_grad: d must be [N, O, Ho, Wo], got ", d.sizes());
  TORCH_CHECK(out.dim() == 5, "conv_weight_grad: out must be [N, O, C/groups, kH, kW], got ",
              out.sizes());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "conv_weight_grad: stride, padding, dilation must have 2 entries, got ", stride,
              ", ", padding, ", ", dilation);
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0 &&
                  padding[0] >= 0 && padding[1] >= 0,
              "conv_weight_grad: need stride > 0, dilation > 0, padding >= 0, got ", stride, ", ",
              dilation, ", ", padding);
  TORCH_CHECK(groups > 0 && x.size(1) % groups == 0 && d.size(1) % groups == 0,
              "conv_weight_grad: groups = ", groups, " must divide C = ", x.size(1), " and O = ",
              d.size(1));
  check_float_same("conv_weight_grad", {&x, &d, &out});
  TORCH_CHECK(x.size(0) == d.size(0) && out.size(0) == x.size(0),
              "conv_weight_grad: batch sizes differ: x ", x.sizes(), ", d ", d.sizes(), ", out ",
              out.sizes());
  TORCH_CHECK(out.size(1) == d.size(1) && out.size(2) == x.size(1) / groups,
              "conv_weight_grad: out must be [N, ", d.size(1), ", ", x.size(1) / groups,
              ", kH, kW], got ", out.sizes());
  const int64_t Ho = conv_out_extent(x.size(2), out.size(3), stride[0], padding[0], dilation[0]);
  const int64_t Wo = conv_out_extent(x.size(3), out.size(4), stride[1], padding[1], dilation[1]);
  TORCH_CHECK(d.size(2) == Ho && d.size(3) == Wo, "conv_weight_grad: d must be [N, O, ", Ho,
              ", ", Wo, "] for x ", x.sizes(), " and kernel ", out.size(3), "x", out.size(4),
              ", got ", d.sizes());
  // out is written in place as a column block of the N x P matrix: each sample's
  // [O, Cg, kH, kW] block must be contiguous; the sample stride is free.
  const int64_t block = out.size(1) * out.size(2) * out.size(3) * out.size(4);
  TORCH_CHECK(block == 0 || (out.stride(4) == 1 && out.stride(3) == out.size(4) &&
                             out.stride(2) == out.size(3) * out.size(4) &&
                             out.stride(1) == out.size(2) * out.size(3) * out.size(4)),
              "conv_weight_grad: out must have contiguous per-sample blocks, got strides ",
              out.strides());
}

// x [N, C, H, W], w [O, C/groups, kH, kW], bias [O] or none; returns the geometry with the
// output extent as torch computes it.
inline ConvGeometry check_conv_forward_args(const at::Tensor& x, const at::Tensor& w,
                                            const c10::optional<at::Tensor>& bias,
                                            at::IntArrayRef stride, at::IntArrayRef padding,
                                            at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(x.dim() == 4, "conv_forward: x must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(w.dim() == 4, "conv_forward: weight must be [O, C/groups, kH, kW], got ", w.sizes());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "conv_forward: stride, padding, dilation must have 2 entries, got ", stride, ", ",
              padding, ", ", dilation);
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0 &&
                  padding[0] >= 0 && padding[1] >= 0,
              "conv_forward: need stride > 0, dilation > 0, padding >= 0, got ", stride, ", ",
              padding, ", ", dilation);
  TORCH_CHECK(groups > 0 && x.size(1) % groups == 0 && w.size(0) % groups == 0 &&
                  w.size(1) * groups == x.size(1),
              "conv_forward: x ", x.sizes(), " and weight ", w.sizes(),
              " do not fit groups = ", groups);
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == w.size(0),
                "conv_forward: bias must be [O] = [", w.size(0), "], got ", bias->sizes());
    check_float_same("conv_forward", {&x, &w, &*bias});
  } else {
    check_float_same("conv_forward", {&x, &w});
  }
  const int64_t Ho = conv_out_extent(x.size(2), w.size(2), stride[0], padding[0], dilation[0]);
  const int64_t Wo = conv_out_extent(x.size(3), w.size(3), stride[1], padding[1], dilation[1]);
  TORCH_CHECK(Ho > 0 && Wo > 0, "conv_forward: the kernel ", w.sizes(), " does not fit x ",
              x.sizes(), " with this padding and dilation");
  return ConvGeometry{x.size(1), x.size(2), x.size(3), w.size(0), Ho, Wo,
                      x.size(1) / groups, w.size(0) / groups, w.size(2), w.size(3),
                      stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1]};
}

inline void check_bias_grad_args(const at::Tensor& d, const at::Tensor& out) {
  TORCH_CHECK(d.dim() == 3, "bias_grad: d must be [N, T, O], got ", d.sizes());
  TORCH_CHECK(out.dim() == 2 && out.size(0) == d.size(0) && out.size(1) == d.size(2),
              "bias_grad: out must be [N, O] = [", d.size(0), ", ", d.size(2), "], got ",
              out.sizes());
  check_float_same("bias_grad", {&d, &out});
  TORCH_CHECK(out.size(1) <= 1 || out.stride(1) == 1,
              "bias_grad: out rows must be contiguous, got strides ", out.strides());
}

// a [N, I], d [N, O]; extra: v [O*I, M] (matvec) or u [N, M] (rmatvec).
inline void check_linear_ghost_args(const char* op, const at::Tensor& a, const at::Tensor& d) {
  TORCH_CHECK(a.dim() == 2, op, ": a must be [N, I], got ", a.sizes());
  TORCH_CHECK(d.dim() == 2, op, ": d must be [N, O], got ", d.sizes());
  TORCH_CHECK(a.size(0) == d.size(0), op, ": a ", a.sizes(), " and d ", d.sizes(),
              " disagree in N");
  check_float_same(op, {&a, &d});
}

// G v: v [O*I, M] in the weight's row-major order.
inline void check_linear_ghost_matvec_args(const at::Tensor& a, const at::Tensor& d,
                                           const at::Tensor& v) {
  check_linear_ghost_args("linear_ghost_matvec", a, d);
  const int64_t OI = d.size(1) * a.size(1);
  TORCH_CHECK(v.dim() == 2 && v.size(0) == OI,
              "linear_ghost_matvec: v must be [O*I, M] = [", OI, ", M], got ", v.sizes());
  check_float_same("linear_ghost_matvec", {&a, &v});
}

// G^T u: u [N, M].
inline void check_linear_ghost_rmatvec_args(const at::Tensor& a, const at::Tensor& d,
                                            const at::Tensor& u) {
  check_linear_ghost_args("linear_ghost_rmatvec", a, d);
  TORCH_CHECK(u.dim() == 2 && u.size(0) == a.size(0),
              "linear_ghost_rmatvec: u must be [N, M] with N = ", a.size(0), ", got ", u.sizes());
  check_float_same("linear_ghost_rmatvec", {&a, &u});
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

// ---- 2-D Ising Monte Carlo (kernels/ising.h) --------------------------------------------------

// spins [B, L, L] int8 with 2 <= L and L*L < 2^31; thresholds [B, 3] int64 in [0, 2^32);
// n_sweeps >= 0; the sweep counters sweep_offset .. sweep_offset + n_sweeps fit in 32 bits;
// 1 <= clusters_per_sweep < 2^32. (The values +-1 are the caller's promise: hessext.ops
// checks them.)
inline void check_ising_sweeps_args(const at::Tensor& spins, const at::Tensor& thresholds,
                                    int64_t n_sweeps, int64_t sweep_offset,
                                    int64_t clusters_per_sweep) {
  TORCH_CHECK(spins.dim() == 3 && spins.size(1) == spins.size(2),
              "ising_sweeps: spins must be [B, L, L], got ", spins.sizes());
  TORCH_CHECK(spins.scalar_type() == at::kChar, "ising_sweeps: spins must be int8, got ",
              spins.scalar_type());
  TORCH_CHECK(spins.size(1) >= 2 && spins.size(1) * spins.size(1) < (int64_t(1) << 31),
              "ising_sweeps: L must be >= 2 and L*L < 2^31, got L = ", spins.size(1));
  TORCH_CHECK(spins.size(0) < (int64_t(1) << 32), "ising_sweeps: at most 2^32 chains, got ",
              spins.size(0));
  TORCH_CHECK(thresholds.dim() == 2 && thresholds.size(0) == spins.size(0) &&
                  thresholds.size(1) == 3,
              "ising_sweeps: thresholds must be [B, 3] = [", spins.size(0), ", 3], got ",
              thresholds.sizes());
  TORCH_CHECK(thresholds.scalar_type() == at::kLong, "ising_sweeps: thresholds must be int64, got ",
              thresholds.scalar_type());
  TORCH_CHECK(thresholds.device() == spins.device(), "ising_sweeps: thresholds on ",
              thresholds.device(), ", spins on ", spins.device());
  TORCH_CHECK(n_sweeps >= 0 && sweep_offset >= 0 &&
                  sweep_offset + n_sweeps <= (int64_t(1) << 32),
              "ising_sweeps: need n_sweeps >= 0, sweep_offset >= 0 and sweep_offset + n_sweeps "
              "<= 2^32, got ", n_sweeps, " and ", sweep_offset);
  TORCH_CHECK(clusters_per_sweep >= 1 && clusters_per_sweep < (int64_t(1) << 32) - 1,
              "ising_sweeps: clusters_per_sweep must be in [1, 2^32 - 1), got ", clusters_per_sweep);
}

}  // namespace hessext

// ---- K-FAC factors and the EK-FAC eigenvalue correction (kernels/kfac.h) ---------------------

namespace hessext {

inline void check_kfac_factors_args(const at::Tensor& a, const at::Tensor& g, const at::Tensor& A,
                                    const at::Tensor& S, bool append_one) {
  TORCH_CHECK(a.dim() == 2, "kfac_factors: a must be [K, I], got ", a.sizes());
  TORCH_CHECK(g.dim() == 2, "kfac_factors: g must be [K, O], got ", g.sizes());
  check_float_same("kfac_factors", {&a, &g});
  const int64_t Ia = a.size(1) + (append_one ? 1 : 0);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == Ia && A.size(1) == Ia,
              "kfac_factors: A must be [I', I'] = [", Ia, ", ", Ia, "] (I' = I + append_one), got ",
              A.sizes());
  TORCH_CHECK(S.dim() == 2 && S.size(0) == g.size(1) && S.size(1) == g.size(1),
              "kfac_factors: S must be [O, O] = [", g.size(1), ", ", g.size(1), "], got ", S.sizes());
  TORCH_CHECK(A.scalar_type() == at::kDouble && S.scalar_type() == at::kDouble,
              "kfac_factors: A and S must be float64 (the accumulators), got ", A.scalar_type(),
              " and ", S.scalar_type());
  TORCH_CHECK(A.is_contiguous() && S.is_contiguous(), "kfac_factors: A and S must be contiguous");
  TORCH_CHECK(A.device() == a.device() && S.device() == a.device(),
              "kfac_factors: tensors on different devices: a ", a.device(), ", A ", A.device(),
              ", S ", S.device());
}

inline void check_ekfac_correction_args(const at::Tensor& a, const at::Tensor& g,
                                        const at::Tensor& qa, const at::Tensor& qs,
                                        const at::Tensor& lam, bool append_one) {
  TORCH_CHECK(a.dim() == 3, "ekfac_correction: a must be [N, T, I], got ", a.sizes());
  TORCH_CHECK(g.dim() == 3, "ekfac_correction: g must be [R*N, T, O], got ", g.sizes());
  check_float_same("ekfac_correction", {&a, &g, &qa, &qs});
  const int64_t N = a.size(0), T = a.size(1);
  TORCH_CHECK(g.size(1) == T, "ekfac_correction: a ", a.sizes(), " and g ", g.sizes(),
              " disagree in T");
  TORCH_CHECK((N == 0 && g.size(0) == 0) || (N > 0 && g.size(0) % N == 0),
              "ekfac_correction: g's rows (", g.size(0), ") must be a multiple of a's (", N,
              "): R seed-major replicas sharing a");
  const int64_t Ia = a.size(2) + (append_one ? 1 : 0), O = g.size(2);
  TORCH_CHECK(qa.dim() == 2 && qa.size(0) == Ia && qa.size(1) == Ia,
              "ekfac_correction: qa must be [I', I'] = [", Ia, ", ", Ia, "], got ", qa.sizes());
  TORCH_CHECK(qs.dim() == 2 && qs.size(0) == O && qs.size(1) == O,
              "ekfac_correction: qs must be [O, O] = [", O, ", ", O, "], got ", qs.sizes());
  TORCH_CHECK(lam.dim() == 2 && lam.size(0) == O && lam.size(1) == Ia,
              "ekfac_correction: lam must be [O, I'] = [", O, ", ", Ia, "], got ", lam.sizes());
  TORCH_CHECK(lam.scalar_type() == at::kDouble,
              "ekfac_correction: lam must be float64 (the accumulator), got ", lam.scalar_type());
  TORCH_CHECK(lam.is_contiguous(), "ekfac_correction: lam must be contiguous");
  TORCH_CHECK(lam.device() == a.device(), "ekfac_correction: tensors on different devices: a ",
              a.device(), ", lam ", lam.device());
}

}  // namespace hessext
