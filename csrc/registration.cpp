// The hessext operator library: every schema in one place, and the small pybind11 module whose
// import runs these static registrations. Implementations register per dispatch key in
// cpu/<op>.cpp, cuda/<op>.cpp (+ <op>.cu) and autograd/<op>.cpp; fake (meta) implementations
// and the other autograd formulas are registered in Python (hessext/ops/_registration.py).
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <pybind11/pybind11.h>

TORCH_LIBRARY(hessext, m) {
  // Per-sample weight gradients of a Linear layer written in place into out (a column block of
  // the N x P gradient matrix). a: [N, T, I], d: [N, T, O], out: [N, O, I].
  m.def("linear_weight_grad(Tensor a, Tensor d, Tensor(a!) out) -> ()");
  // Stein (SmoothHess) sampler, step 1: perturbed copies x +- sqrt(sigma) z of each point, z
  // from Philox keyed by (seed, point_offset + b, pair_offset + j). x: [B, D] -> [B, A, P, D]
  // (A = 2 with antithetic pairs: [:, 0] = x + sqrt(sigma) z, [:, 1] = x - sqrt(sigma) z).
  m.def("stein_perturb(Tensor x, float sigma, int seed, int point_offset, int pair_offset, "
        "int n_pairs, bool antithetic) -> Tensor");
  // Step 2, after the network gave the gradients h at the perturbed copies: regenerate z and
  // add sum_j z_j (h+_j - h-_j)^T per tile of tile_pairs pairs into group (tile % M) of
  // hess_acc, and sum_j (h+_j + h-_j) into grad_acc. h: [B, A, P, K], hess_acc: [B, M, D, K]
  // float64, grad_acc: [B, M, K] float64. z: optional [B, P, D] directions in h's dtype, exactly
  // the generator's (stein_perturb of zeros with sigma = 1), read instead of regenerated when the
  // caller has them anyway.
  m.def("stein_accumulate(Tensor h, Tensor(a!) hess_acc, Tensor(b!) grad_acc, int seed, "
        "int point_offset, int pair_offset, int tile_pairs, Tensor? z=None) -> ()");
  // Curvature tile update in place: acc += alpha * a^T b, the product at the precision of a and b
  // (float32/float64), the sum in float64. acc: [R, S] float64 (any strides), a: [K, R], b: [K, S].
  m.def("gemm_accumulate(Tensor(a!) acc, Tensor a, Tensor b, float alpha) -> ()");

  // Per-sample weight gradients of a Conv2d (Conv1d as H = 1) written in place into out, a
  // direct correlation per sample. x: [N, C, H, W], d: [N, O, Ho, Wo], out: [N, O, C/groups,
  // kH, kW] with contiguous per-sample blocks.
  m.def("conv_weight_grad(Tensor x, Tensor d, Tensor(a!) out, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups) -> ()");
  // Per-sample bias gradients, out[n, o] = sum_t d[n, t, o]. d: [N, T, O] any strides,
  // out: [N, O] with contiguous rows.
  m.def("bias_grad(Tensor d, Tensor(a!) out) -> ()");
  // Ghost contractions of a Linear layer's per-sample weight gradients g_n = vec(d_n a_n^T),
  // a: [N, I], d: [N, O]: G v with v [O*I, M] -> [N, M]; G^T u with u [N, M] -> [O*I, M];
  // squared row norms -> [N]; Gram matrix G G^T -> [N, N].
  m.def("linear_ghost_matvec(Tensor a, Tensor d, Tensor v) -> Tensor");
  m.def("linear_ghost_rmatvec(Tensor a, Tensor d, Tensor u) -> Tensor");
  m.def("linear_ghost_sqnorms(Tensor a, Tensor d) -> Tensor");
  m.def("linear_ghost_gram(Tensor a, Tensor d) -> Tensor");

  // Max pooling whose window equals its stride (no padding, dilation 1, floor mode), for the
  // per-sample capture's forward pass (kernels/max_pool.h). x: [N, C, H, W] -> values and uint8
  // window indices i*kW + j, both [N, C, H/kH, W/kW]; backward: dx [N, C, H, W] from grad_out
  // and the indices.
  m.def("max_pool_forward(Tensor x, int[2] kernel) -> (Tensor, Tensor)");
  // Direct 2-D convolution (Conv1d as H = 1) for few terms per output (kernels/conv_forward.h),
  // for the same forward pass. x: [N, C, H, W], weight: [O, C/groups, kH, kW] -> [N, O, Ho, Wo].
  // Differentiable (autograd in autograd/conv_forward.cpp: torch's convolution_backward, for
  // the inputs the backward pass needs).
  m.def("conv_forward(Tensor x, Tensor weight, Tensor? bias, int[2] stride, int[2] padding, "
        "int[2] dilation, int groups) -> Tensor");
  m.def("max_pool_backward(Tensor grad_out, Tensor indices, int[2] kernel, int[2] input_size) "
        "-> Tensor");

  // K-FAC factors of one layer (kernels/kfac.h), accumulated in float64 without any per-sample
  // gradient: A [I', I'] += a'^T a' with a' = [a, 1] (append_one) or a, a: [K, I];
  // S [O, O] += g^T g, g: [Kg, O]. A and S are contiguous float64.
  m.def("kfac_factors(Tensor a, Tensor g, Tensor(a!) A, Tensor(b!) S, bool append_one) -> ()");
  // EK-FAC eigenvalue correction (kernels/kfac.h): lam [O, I'] (float64) += the squared
  // per-example gradients in the eigenbasis of the factors, sum_{r,n} (qs^T G_{r,n} qa)^2 with
  // G_{r,n} = sum_t g_{r,n,t} a'_{n,t}^T. a: [N, T, I], g: [R*N, T, O] (R seed-major replicas
  // sharing a), qa: [I', I'], qs: [O, O] in a's dtype.
  m.def("ekfac_correction(Tensor a, Tensor g, Tensor qa, Tensor qs, Tensor(a!) lam, "
        "bool append_one) -> ()");

  // 2-D Ising Monte Carlo, J = 1, periodic (kernels/ising.h): n_sweeps Metropolis sweeps
  // (checkerboard order) or Wolff sweeps (clusters_per_sweep cluster flips each) of every chain.
  // spins: [B, L, L] int8 (+-1); thresholds: [B, 3] int64, floor(p 2^32) of p = exp(-4 beta),
  // exp(-8 beta), 1 - exp(-2 beta) per chain (computed once by the caller, so that every path
  // compares the same integers). Random words from Philox keyed by seed, counted by (site,
  // sweep_offset + t, chain b, stream). Returns the new spins [B, L, L] and, with record, the
  // observables after every sweep [B, n_sweeps, 2] float64 (m, e per site; [B, 0, 2] without).
  m.def("ising_sweeps(Tensor spins, Tensor thresholds, int n_sweeps, int seed, int sweep_offset, "
        "bool wolff, int clusters_per_sweep, bool record) -> (Tensor, Tensor)");
}

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "hessext compiled core: build information; the tensor ops live in torch.ops.hessext";
  m.attr("version") = HESSEXT_VERSION;
  m.attr("torch_version") = HESSEXT_TORCH_VERSION;
#ifdef HESSEXT_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.attr("cuda_archs") = HESSEXT_CUDA_ARCHS;
#ifdef _OPENMP
  m.attr("with_openmp") = true;
#else
  m.attr("with_openmp") = false;
#endif
  m.def("num_threads", []() { return at::get_num_threads(); },
        "threads at::parallel_for uses in the hessext CPU kernels");
}
