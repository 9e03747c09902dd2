"""Python-side registrations for the compiled ops: fake (meta) implementations, so the ops work
under torch.compile and FakeTensor, and autograd formulas where an op is differentiable.
Imported once by hessext.ops, and only when the compiled core is loaded."""

from __future__ import annotations

import torch


@torch.library.register_fake("hessext::linear_weight_grad")
def _linear_weight_grad_fake(a, d, out):
    return None


@torch.library.register_fake("hessext::gemm_accumulate")
def _gemm_accumulate_fake(acc, a, b, alpha):
    return None
