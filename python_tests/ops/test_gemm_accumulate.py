"""hessext::gemm_accumulate: opcheck, CPU kernel vs reference, dtypes, odd/degenerate shapes,
non-contiguous inputs and accumulator views, fallback parity."""

import pytest
import torch

from hessext import _extension, ops
from hessext.ops import _reference
from hessext.testing import run_python

needs_kernel = pytest.mark.skipif(
    not _extension.has_kernel("gemm_accumulate", "cpu"),
    reason="compiled core without a CPU gemm_accumulate kernel",
)

SHAPES = [(1, 1, 1), (7, 5, 3), (33, 17, 29), (1, 40, 2), (0, 3, 4)]


def _inputs(K, R, S, dtype, noncontig, seed=0):
    g = torch.Generator().manual_seed(seed)
    if noncontig:
        a = torch.randn(R, K, generator=g, dtype=dtype).t()  # [K, R], transposed storage
        b = torch.randn(K, 2 * S, generator=g, dtype=dtype)[:, ::2]  # strided columns
    else:
        a = torch.randn(K, R, generator=g, dtype=dtype)
        b = torch.randn(K, S, generator=g, dtype=dtype)
    big = torch.randn(R + 3, S + 4, generator=g, dtype=torch.float64)
    acc = big[1 : R + 1, 2 : S + 2] if noncontig else big[:R, :S].clone()
    return acc, a, b


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("noncontig", [False, True])
def test_kernel_matches_reference(dtype, shape, noncontig):
    acc, a, b = _inputs(*shape, dtype, noncontig)
    expect = acc.clone()
    _reference.gemm_accumulate(expect, a, b, -0.37)
    torch.ops.hessext.gemm_accumulate(acc, a, b, -0.37)
    # float64: identical BLAS products up to summation order; float32: the product is float32
    tol = 1e-13 if dtype == torch.float64 else 1e-5
    assert torch.allclose(acc, expect, rtol=tol, atol=tol * max(1, shape[0]))
    assert acc.dtype == torch.float64


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    for shape in [(5, 3, 4), (1, 1, 1)]:
        acc, a, b = _inputs(*shape, dtype, False)
        torch.library.opcheck(torch.ops.hessext.gemm_accumulate, (acc, a, b, 0.5))
        acc, a, b = _inputs(*shape, dtype, True)
        torch.library.opcheck(torch.ops.hessext.gemm_accumulate, (acc.clone(), a, b, 2.0))


@needs_kernel
def test_errors_name_the_op():
    acc = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="gemm_accumulate: acc must be float64"):
        torch.ops.hessext.gemm_accumulate(acc.float(), torch.ones(2, 3), torch.ones(2, 4), 1.0)
    with pytest.raises(RuntimeError, match="gemm_accumulate: a .* and b .* disagree in K"):
        torch.ops.hessext.gemm_accumulate(acc, torch.ones(2, 3), torch.ones(5, 4), 1.0)
    with pytest.raises(RuntimeError, match="gemm_accumulate: dtypes differ"):
        torch.ops.hessext.gemm_accumulate(acc, torch.ones(2, 3), torch.ones(2, 4, dtype=torch.float64), 1.0)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strip_of_a_large_matrix_in_row_blocks(dtype):
    """A strip H[:R, j0:j1] of a wider matrix with R·S above the kernel's float32 row block
    (2**21 entries: three blocks here) and one row block cut short; float64 goes in place. Both
    against the float64 product (float32: relative error of a K = 6 product, <= 1e-6)."""
    g = torch.Generator().manual_seed(3)
    R, S, K = 5000, 1000, 6
    H = torch.randn(R, S + 300, generator=g, dtype=torch.float64)
    before = H.clone()
    a, b = torch.randn(K, R, generator=g, dtype=dtype), torch.randn(K, S, generator=g, dtype=dtype)
    torch.ops.hessext.gemm_accumulate(H[:, 100 : 100 + S], a, b, 0.5)
    expect = before[:, 100 : 100 + S] + 0.5 * a.double().t() @ b.double()
    tol = 1e-13 if dtype == torch.float64 else 1e-6
    assert torch.allclose(H[:, 100 : 100 + S], expect, rtol=tol, atol=tol * 4)
    assert torch.equal(H[:, :100], before[:, :100]) and torch.equal(H[:, 100 + S :], before[:, 100 + S :])
    ref = before[:, 100 : 100 + S].clone()
    _reference.gemm_accumulate(ref, a, b, 0.5)
    assert torch.allclose(ref, expect, rtol=tol, atol=tol * 4)


def test_symmetric_rank_k_through_python_wrapper():
    a = torch.randn(50, 9, dtype=torch.float32)
    acc = torch.zeros(9, 9, dtype=torch.float64)
    ops.gemm_accumulate(acc, a, a, 1.0)
    assert torch.allclose(acc, a.double().t() @ a.double(), rtol=1e-5, atol=1e-5)


_PARITY = r"""
import torch, hessext
from torch import nn
import torch.nn.functional as F
torch.manual_seed(0)
m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
x = torch.randn(9, 3); y = torch.randint(0, 2, (9,))
ce = lambda o, t: F.cross_entropy(o, t, reduction="none")
G = hessext.ggn(m, ce, (x, y), dtype=torch.float32, progress=False)
torch.save(G.dense(), "{path}")
"""


def test_fallback_parity(tmp_path):
    """The whole GGN with the extension disabled equals the one with the kernel (float32 products:
    same BLAS, so agreement to float32 rounding of the tile products)."""
    results = []
    for disable in (False, True):
        path = tmp_path / f"G{int(disable)}.pt"
        run_python(_PARITY.format(path=path), disable_ext=disable)
        results.append(torch.load(path))
    assert torch.allclose(results[0], results[1], rtol=1e-6, atol=1e-7)
