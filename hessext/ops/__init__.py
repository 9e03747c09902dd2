"""One Python function per native op.

Each dispatches to the compiled op (torch.ops.hessext.<op>) when it was built for the tensors'
device and dtype, and otherwise to the pure-torch reference in ops/_reference.py. The toolbox
layers call these functions, never torch.ops.hessext directly.
"""

from __future__ import annotations

import torch

from hessext import _extension
from hessext.ops import _reference

if _extension.loaded:
    from hessext.ops import _registration  # noqa: F401  (fake and autograd registrations)

_KERNEL_DTYPES = (torch.float32, torch.float64)


def uses_kernel(op: str, *tensors: torch.Tensor) -> bool:
    """Whether ``op`` on these tensors runs compiled code (False: the pure-torch reference)."""
    first = tensors[0]
    return (first.dtype in _KERNEL_DTYPES and all(t.dtype == first.dtype for t in tensors)
            and _extension.has_kernel(op, first.device.type))


def linear_weight_grad(a: torch.Tensor, d: torch.Tensor, out: torch.Tensor) -> None:
    """Per-sample Linear weight gradients, in place: out[n] = d[n]ᵀ a[n].

    a: [N, T, I] layer inputs; d: [N, T, O] gradients of the layer outputs; out: [N, O, I] with
    contiguous [O, I] blocks (typically a column block of the N×P gradient matrix)."""
    if uses_kernel("linear_weight_grad", a, d, out):
        torch.ops.hessext.linear_weight_grad(a, d, out)
    else:
        _reference.linear_weight_grad(a, d, out)


def gemm_accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> None:
    """Tile update of a float64 curvature matrix, in place: acc += alpha * aᵀ b.

    acc: [R, S] float64 (may be a strided view of a larger matrix); a: [K, R] and b: [K, S] in
    the model's precision (float32 or float64); the product is computed at that precision and
    added in float64. With b = a it is the symmetric rank-K update of a diagonal tile."""
    if uses_kernel("gemm_accumulate", a, b) and acc.dtype == torch.float64:
        torch.ops.hessext.gemm_accumulate(acc, a, b, float(alpha))
    else:
        _reference.gemm_accumulate(acc, a, b, float(alpha))
def conv_weight_grad(x: torch.Tensor, d: torch.Tensor, out: torch.Tensor, stride, padding,
                     dilation, groups: int) -> None:
    """Per-sample Conv2d weight gradients, in place (Conv1d: H = 1).

    x: [N, C, H, W] layer inputs (zero padding not applied); d: [N, O, Ho, Wo] gradients of the
    layer outputs; out: [N, O, C/groups, kH, kW] with contiguous per-sample blocks (typically a
    column block of the N×P gradient matrix); stride, padding, dilation: pairs of ints."""
    stride, padding, dilation = (list(map(int, t)) for t in (stride, padding, dilation))
    if uses_kernel("conv_weight_grad", x, d, out):
        torch.ops.hessext.conv_weight_grad(x, d, out, stride, padding, dilation, int(groups))
    else:
        _reference.conv_weight_grad(x, d, out, stride, padding, dilation, int(groups))


def bias_grad(d: torch.Tensor, out: torch.Tensor) -> None:
    """Per-sample bias gradients, in place: out[n, o] = Σ_t d[n, t, o].

    d: [N, T, O] (any strides); out: [N, O] with contiguous rows."""
    if uses_kernel("bias_grad", d, out):
        torch.ops.hessext.bias_grad(d, out)
    else:
        _reference.bias_grad(d, out)


def linear_ghost_matvec(a: torch.Tensor, d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """G v for a Linear layer's per-sample weight gradients g_n = vec(d_n a_nᵀ), without G.

    a: [N, I]; d: [N, O]; v: [O*I, M] (rows in the weight's row-major order) → [N, M]."""
    if uses_kernel("linear_ghost_matvec", a, d, v):
        return torch.ops.hessext.linear_ghost_matvec(a, d, v)
    return _reference.linear_ghost_matvec(a, d, v)


def linear_ghost_rmatvec(a: torch.Tensor, d: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Gᵀ u for a Linear layer's per-sample weight gradients, without G.

    a: [N, I]; d: [N, O]; u: [N, M] → [O*I, M]."""
    if uses_kernel("linear_ghost_rmatvec", a, d, u):
        return torch.ops.hessext.linear_ghost_rmatvec(a, d, u)
    return _reference.linear_ghost_rmatvec(a, d, u)


def linear_ghost_sqnorms(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Squared norms ‖g_n‖² = ‖a_n‖²‖d_n‖² of a Linear layer's per-sample weight gradients.

    a: [N, I]; d: [N, O] → [N]."""
    if uses_kernel("linear_ghost_sqnorms", a, d):
        return torch.ops.hessext.linear_ghost_sqnorms(a, d)
    return _reference.linear_ghost_sqnorms(a, d)


def linear_ghost_gram(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Gram matrix G Gᵀ of a Linear layer's per-sample weight gradients: (a aᵀ) ∘ (d dᵀ).

    a: [N, I]; d: [N, O] → [N, N]."""
    if uses_kernel("linear_ghost_gram", a, d):
        return torch.ops.hessext.linear_ghost_gram(a, d)
    return _reference.linear_ghost_gram(a, d)
