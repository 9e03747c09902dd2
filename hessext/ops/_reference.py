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
def conv_weight_grad(x: torch.Tensor, d: torch.Tensor, out: torch.Tensor, stride, padding,
                     dilation, groups: int) -> None:
    """out[n, o, c, kh, kw] = sum_{oh,ow} d[n, o, oh, ow] x[n, g*Cg + c, oh*sh - ph + kh*dh,
    ow*sw - pw + kw*dw]; x [N, C, H, W], d [N, O, Ho, Wo], out [N, O, C/groups, kH, kW]."""
    N, C = x.shape[:2]
    O, kH, kW = out.shape[1], out.shape[3], out.shape[4]
    cols = torch.nn.functional.unfold(x, (kH, kW), dilation=tuple(dilation),
                                      padding=tuple(padding), stride=tuple(stride))
    cols = cols.view(N, groups, (C // groups) * kH * kW, -1)       # [N, g, Cg*kH*kW, L]
    dg = d.reshape(N, groups, O // groups, -1)                     # [N, g, Og, L]
    out.copy_(torch.einsum("ngol,ngkl->ngok", dg, cols).reshape(out.shape))


def bias_grad(d: torch.Tensor, out: torch.Tensor) -> None:
    """out[n, o] = sum_t d[n, t, o]; d [N, T, O], out [N, O]."""
    out.copy_(d.sum(1))


def linear_ghost_matvec(a: torch.Tensor, d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(G v)[n, m] = sum_{o,i} d[n, o] a[n, i] v[o*I + i, m]; a [N, I], d [N, O], v [O*I, M]."""
    return torch.einsum("no,ni,oim->nm", d, a, v.reshape(d.shape[1], a.shape[1], v.shape[1]))


def linear_ghost_rmatvec(a: torch.Tensor, d: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(G^T u)[o*I + i, m] = sum_n d[n, o] a[n, i] u[n, m] -> [O*I, M]."""
    return torch.einsum("no,ni,nm->oim", d, a, u).reshape(-1, u.shape[1])


def linear_ghost_sqnorms(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """|g_n|^2 = |a_n|^2 |d_n|^2 -> [N]."""
    return a.square().sum(1) * d.square().sum(1)


def linear_ghost_gram(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(G G^T)[n, k] = (a_n . a_k)(d_n . d_k) -> [N, N]."""
    return (a @ a.T) * (d @ d.T)
