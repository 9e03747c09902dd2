"""hessext::kfac_factors and hessext::ekfac_correction: CPU kernels against the pure-torch
references (float64 formulas, the correction by materialised per-example gradients), dtypes,
odd and empty shapes, strided inputs, opcheck, argument errors, fallback parity."""

import pytest
import torch

from hessext import _extension, ops
from hessext.ops import _reference
from hessext.testing import run_python

needs_kernel = pytest.mark.skipif(
    not _extension.has_kernel("kfac_factors", "cpu"), reason="compiled core without the K-FAC kernels"
)

# float32 products summed in float64: relative error of a product of length K ~ K·u32 (worst
# case; the panels bound K at 2048 rows); float64: ~K·u64
TOL = {torch.float32: 2048 * 2**-24, torch.float64: 1e-12}


def _orthonormal(d, dtype, g):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q.to(dtype)


def _factor_inputs(K, Kg, I, O, dtype, strided, seed=0):
    g = torch.Generator().manual_seed(seed)
    if strided:
        a = torch.randn(I, K, generator=g, dtype=dtype).T  # transposed storage
        d = torch.randn(Kg, 2 * O, generator=g, dtype=dtype)[:, ::2]
    else:
        a = torch.randn(K, I, generator=g, dtype=dtype)
        d = torch.randn(Kg, O, generator=g, dtype=dtype)
    return a, d


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape", [(1, 1, 1, 1), (37, 37, 5, 3), (3000, 3000, 9, 4), (0, 6, 4, 2), (8, 0, 3, 5), (6, 6, 0, 2)]
)
@pytest.mark.parametrize("append_one", [True, False])
@pytest.mark.parametrize("strided", [False, True])
def test_kfac_factors_kernel_matches_reference(dtype, shape, append_one, strided):
    K, Kg, I, O = shape
    a, d = _factor_inputs(K, Kg, I, O, dtype, strided)
    Ia = I + append_one
    start_A = torch.randn(Ia, Ia, dtype=torch.float64)
    start_S = torch.randn(O, O, dtype=torch.float64)
    A, S = start_A.clone(), start_S.clone()
    eA, eS = start_A.clone(), start_S.clone()
    torch.ops.hessext.kfac_factors(a, d, A, S, append_one)
    _reference.kfac_factors(a, d, eA, eS, append_one)
    scale = max(1.0, float(K))
    assert torch.allclose(A, eA, rtol=TOL[dtype], atol=TOL[dtype] * scale)
    assert torch.allclose(S, eS, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1, 1, 1), (13, 1, 6, 4, 1), (13, 1, 6, 4, 3), (7, 5, 4, 3, 2), (0, 1, 3, 2, 1), (5, 4, 0, 3, 1)],
)
@pytest.mark.parametrize("append_one", [True, False])
def test_ekfac_correction_kernel_matches_reference(dtype, shape, append_one):
    N, T, I, O, R = shape
    g = torch.Generator().manual_seed(1)
    a = torch.randn(N, T, I, generator=g, dtype=dtype)
    d = torch.randn(R * N, T, O, generator=g, dtype=dtype)
    qa = _orthonormal(I + append_one, dtype, g) if I + append_one else torch.zeros(0, 0, dtype=dtype)
    qs = _orthonormal(O, dtype, g)
    lam = torch.randn(O, I + append_one, dtype=torch.float64)
    want = lam.clone()
    torch.ops.hessext.ekfac_correction(a, d, qa, qs, lam, append_one)
    _reference.ekfac_correction(a, d, qa, qs, want, append_one)
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    assert torch.allclose(lam, want, rtol=50 * TOL[dtype], atol=50 * TOL[dtype] * scale)


@needs_kernel
def test_ekfac_correction_accepts_strided_inputs():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 3, 10, generator=g, dtype=torch.float64)[:, :, ::2]  # [6, 3, 5], strided
    d = torch.randn(6, 5, 3, generator=g, dtype=torch.float64).transpose(1, 2)[:, :, :4]  # [6, 3, 4]
    assert not a.is_contiguous() and not d.is_contiguous()
    qa, qs = _orthonormal(6, torch.float64, g), _orthonormal(4, torch.float64, g)
    lam, want = torch.zeros(4, 6, dtype=torch.float64), torch.zeros(4, 6, dtype=torch.float64)
    torch.ops.hessext.ekfac_correction(a, d, qa, qs, lam, True)
    _reference.ekfac_correction(a, d, qa, qs, want, True)
    assert torch.allclose(lam, want, rtol=1e-12, atol=1e-12)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(dtype):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(9, 4, generator=g, dtype=dtype)
    d = torch.randn(9, 3, generator=g, dtype=dtype)
    torch.library.opcheck(
        torch.ops.hessext.kfac_factors,
        (a, d, torch.zeros(5, 5, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64), True),
    )
    a3, d3 = a.reshape(3, 3, 4), d.reshape(3, 3, 3)
    qa, qs = _orthonormal(5, dtype, g), _orthonormal(3, dtype, g)
    torch.library.opcheck(
        torch.ops.hessext.ekfac_correction, (a3, d3, qa, qs, torch.zeros(3, 5, dtype=torch.float64), True)
    )


@needs_kernel
def test_errors_name_the_op_and_the_argument():
    a, d = torch.ones(4, 3), torch.ones(4, 2)
    with pytest.raises(RuntimeError, match=r"kfac_factors: A must be \[I', I'\] = \[4, 4\]"):
        torch.ops.hessext.kfac_factors(
            a, d, torch.zeros(3, 3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64), True
        )
    with pytest.raises(RuntimeError, match="kfac_factors: A and S must be float64"):
        torch.ops.hessext.kfac_factors(a, d, torch.zeros(4, 4), torch.zeros(2, 2), True)
    with pytest.raises(RuntimeError, match="kfac_factors: dtypes differ"):
        torch.ops.hessext.kfac_factors(
            a,
            d.double(),
            torch.zeros(4, 4, dtype=torch.float64),
            torch.zeros(2, 2, dtype=torch.float64),
            True,
        )
    with pytest.raises(RuntimeError, match="ekfac_correction: g's rows .* must be a multiple"):
        torch.ops.hessext.ekfac_correction(
            torch.ones(3, 1, 2),
            torch.ones(4, 1, 2),
            torch.eye(3),
            torch.eye(2),
            torch.zeros(2, 3, dtype=torch.float64),
            True,
        )
    with pytest.raises(RuntimeError, match=r"ekfac_correction: qa must be \[I', I'\]"):
        torch.ops.hessext.ekfac_correction(
            torch.ones(3, 1, 2),
            torch.ones(3, 1, 2),
            torch.eye(2),
            torch.eye(2),
            torch.zeros(2, 3, dtype=torch.float64),
            True,
        )


def test_python_wrappers_fall_back_for_other_dtypes():
    a = torch.randn(5, 3, dtype=torch.float16)
    A, S = torch.zeros(4, 4, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    ops.kfac_factors(a, torch.randn(5, 2, dtype=torch.float16), A, S, True)
    assert A[3, 3] == 5 and torch.allclose(A[:3, 3], a.double().sum(0), rtol=1e-3)


_PARITY = r"""
import torch, hessext
from hessext.testing import CNN2d, ce
torch.manual_seed(0)
m = CNN2d()
g = torch.Generator().manual_seed(1)
x = torch.randn(12, 1, 6, 6, generator=g); y = torch.randint(0, 3, (12,), generator=g)
E = hessext.ekfac(m, ce, (x, y), progress=False)
S = hessext.influence(m, ce, (x, y), (x[:3], y[:3]), hessian=E, damping=0.01, progress=False)
torch.save({"D": E.dense(), "S": S.clone()}, "{path}")
"""


def test_fallback_parity(tmp_path):
    """EK-FAC of a float32 CNN and its influence scores with the extension disabled equal the
    kernels' (the same float32 products, summed in another order: float32 rounding)."""
    results = []
    for disable in (False, True):
        path = tmp_path / f"E{int(disable)}.pt"
        run_python(_PARITY.replace("{path}", str(path)), disable_ext=disable)
        results.append(torch.load(path))
    for key in ("D", "S"):
        got, want = results[0][key], results[1][key]
        assert float((got - want).norm() / want.norm()) <= 1e-5, key
