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
