"""Pure-torch references of every hessext op.

This is product code: the fallback when the compiled core is absent or has no kernel for a
device/dtype, the oracle of every kernel test, and the baseline of every benchmark. Keep each
function short and obviously correct; the signatures match the compiled ops exactly.
"""

from __future__ import annotations

import torch


def linear_weight_grad(a: torch.Tensor, d: torch.Tensor, out: torch.Tensor) -> None:
    """out[n, o, i] = sum_t d[n, t, o] a[n, t, i]; a [N, T, I], d [N, T, O], out [N, O, I]."""
    out.copy_(torch.einsum("nto,nti->noi", d, a))


def gemm_accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float) -> None:
    """acc += alpha * (aᵀ b), the product at the precision of a and b, the sum in acc's float64.

    acc [R, S] float64; a [K, R], b [K, S] (float32 or float64, same dtype)."""
    acc.add_(torch.mm(a.t(), b).to(torch.float64), alpha=alpha)
