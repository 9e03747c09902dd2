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
