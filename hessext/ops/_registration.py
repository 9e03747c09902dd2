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
def _stein_accumulate_fake(h, hess_acc, grad_acc, seed, point_offset, pair_offset, tile_pairs,
                           z=None):
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
