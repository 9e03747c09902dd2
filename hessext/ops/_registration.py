"""Python-side registrations for the compiled ops: fake (meta) implementations, so the ops work
under torch.compile and FakeTensor, and autograd formulas where an op is differentiable.
Imported once by hessext.ops, and only when the compiled core is loaded."""

from __future__ import annotations

import torch


@torch.library.register_fake("hessext::linear_weight_grad")
def _linear_weight_grad_fake(a, d, out):
    return None


@torch.library.register_fake("hessext::stein_perturb")
def _stein_perturb_fake(x, sigma, seed, point_offset, pair_offset, n_pairs, antithetic):
    return x.new_empty((x.shape[0], 2 if antithetic else 1, n_pairs, x.shape[1]))


@torch.library.register_fake("hessext::stein_accumulate")
def _stein_accumulate_fake(h, hess_acc, grad_acc, seed, point_offset, pair_offset, tile_pairs, z=None):
    return None


@torch.library.register_fake("hessext::gemm_accumulate")
def _gemm_accumulate_fake(acc, a, b, alpha):
    return None


@torch.library.register_fake("hessext::conv_weight_grad")
def _conv_weight_grad_fake(x, d, out, stride, padding, dilation, groups):
    return None


@torch.library.register_fake("hessext::bias_grad")
def _bias_grad_fake(d, out):
    return None


@torch.library.register_fake("hessext::linear_ghost_matvec")
def _linear_ghost_matvec_fake(a, d, v):
    return a.new_empty(a.shape[0], v.shape[1])


@torch.library.register_fake("hessext::linear_ghost_rmatvec")
def _linear_ghost_rmatvec_fake(a, d, u):
    return a.new_empty(d.shape[1] * a.shape[1], u.shape[1])


@torch.library.register_fake("hessext::linear_ghost_sqnorms")
def _linear_ghost_sqnorms_fake(a, d):
    return a.new_empty(a.shape[0])


@torch.library.register_fake("hessext::linear_ghost_gram")
def _linear_ghost_gram_fake(a, d):
    return a.new_empty(a.shape[0], a.shape[0])


@torch.library.register_fake("hessext::conv_forward")
def _conv_forward_fake(x, weight, bias, stride, padding, dilation, groups):
    def extent(size, k, s, p, d):
        return (size + 2 * p - d * (k - 1) - 1) // s + 1

    return x.new_empty(
        (
            x.shape[0],
            weight.shape[0],
            extent(x.shape[2], weight.shape[2], stride[0], padding[0], dilation[0]),
            extent(x.shape[3], weight.shape[3], stride[1], padding[1], dilation[1]),
        )
    )


# (its autograd is registered in C++: csrc/conv_forward_autograd.cpp)


@torch.library.register_fake("hessext::max_pool_forward")
def _max_pool_forward_fake(x, kernel):
    shape = (x.shape[0], x.shape[1], x.shape[2] // kernel[0], x.shape[3] // kernel[1])
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.uint8)


@torch.library.register_fake("hessext::max_pool_backward")
def _max_pool_backward_fake(grad_out, indices, kernel, input_size):
    return grad_out.new_empty((grad_out.shape[0], grad_out.shape[1], *input_size))


def _max_pool_setup(ctx, inputs, output):
    x, kernel = inputs
    ctx.save_for_backward(output[1])
    ctx.kernel, ctx.input_size = list(kernel), list(x.shape[2:])


def _max_pool_forward_backward(ctx, grad_y, grad_indices):
    (indices,) = ctx.saved_tensors
    return torch.ops.hessext.max_pool_backward(grad_y, indices, ctx.kernel, ctx.input_size), None


torch.library.register_autograd(
    "hessext::max_pool_forward", _max_pool_forward_backward, setup_context=_max_pool_setup
)


def _max_pool_backward_setup(ctx, inputs, output):
    grad_out, indices, kernel, _ = inputs
    ctx.save_for_backward(indices)
    ctx.kernel = list(kernel)


def _max_pool_backward_backward(ctx, grad_dx):
    """max_pool_backward is linear in grad_out: its adjoint gathers grad_dx at the chosen
    elements (double backward through the pooling)."""
    (indices,) = ctx.saved_tensors
    (kH, kW), (N, C, Ho, Wo) = ctx.kernel, indices.shape
    windows = grad_dx[:, :, : Ho * kH, : Wo * kW].reshape(N, C, Ho, kH, Wo, kW)
    windows = windows.permute(0, 1, 2, 4, 3, 5).reshape(N, C, Ho, Wo, kH * kW)
    return windows.gather(-1, indices.long().unsqueeze(-1)).squeeze(-1), None, None, None


torch.library.register_autograd(
    "hessext::max_pool_backward", _max_pool_backward_backward, setup_context=_max_pool_backward_setup
)


@torch.library.register_fake("hessext::kfac_factors")
def _kfac_factors_fake(a, g, A, S, append_one):
    return None


@torch.library.register_fake("hessext::ekfac_correction")
def _ekfac_correction_fake(a, g, qa, qs, lam, append_one):
    return None


@torch.library.register_fake("hessext::ising_sweeps")
def _ising_sweeps_fake(spins, thresholds, n_sweeps, seed, sweep_offset, wolff, clusters_per_sweep, record):
    series = spins.new_empty((spins.shape[0], n_sweeps if record else 0, 2), dtype=torch.float64)
    return torch.empty_like(spins), series
