"""Matrix-free methods against dense linear algebra."""

import pytest
import torch

import hessext
from hessext.curvature import NotPositiveDefiniteError


def spectrum_matrix(P=300, seed=0):
    """Known spectrum: 5 well separated top values, 3 separated bottom ones, a bulk between."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.cat(
        [
            torch.tensor([-3.0, -2.0, -1.5], dtype=torch.float64),
            torch.rand(P - 8, generator=g, dtype=torch.float64),
            torch.tensor([5.0, 7.0, 10.0, 20.0, 50.0], dtype=torch.float64),
        ]
    )
    return Q @ torch.diag(lam) @ Q.T, lam.sort().values


def test_lanczos_matches_eigh():
    A, lam = spectrum_matrix()
    op = hessext.HessianOperator(lambda V: A @ V, A.shape[0])
    vals, vecs = op.top_eigenpairs(5)
    assert torch.allclose(vals, lam.flip(0)[:5], rtol=1e-8, atol=0)
    assert float((A @ vecs - vecs * vals).norm(dim=0).max()) <= 1e-8 * 50
    low, lv = op.smallest_eigenpairs(3)
    assert torch.allclose(low, lam[:3], rtol=1e-8, atol=0)
    assert abs(op.lambda_min() - float(lam[0])) <= 1e-8 * 3
    # the dense Hessian's exact answer agrees
    H = hessext.Hessian.from_matrix(A)
    assert torch.allclose(H.top_eigenpairs(5)[0], vals, rtol=1e-8)


def test_lanczos_on_a_model_hessian():
    from torch import nn

    from hessext.testing import ce, data_for, mlp

    torch.manual_seed(0)
    model = mlp((4, 6, 5, 3), nn.Tanh()).double()
    x, y, _ = data_for("mlp", 20)
    H = hessext.hessian(model, ce, (x, y), progress=False)
    op = hessext.hessian_operator(model, ce, (x, y))
    dense = H.eigh()[0]
    vals, _ = op.top_eigenpairs(2)
    assert torch.allclose(vals, dense.flip(0)[:2], rtol=1e-8)


def test_block_cg_matches_dense_solve_and_refuses_indefinite():
    A, lam = spectrum_matrix(P=120, seed=1)
    op = hessext.HessianOperator(lambda V: A @ V, A.shape[0])
    B = torch.randn(120, 6, dtype=torch.float64)
    truth = torch.linalg.solve(A + 4.0 * torch.eye(120, dtype=torch.float64), B)
    X = op.solve(B, damping=4.0, tol=1e-12)
    assert float((X - truth).norm() / truth.norm()) <= 1e-9
    x1 = op.solve(B[:, 2], damping=4.0, tol=1e-12)
    assert torch.allclose(x1, truth[:, 2], atol=1e-9)
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite"):
        op.solve(B, damping=0.5)


def test_hutchinson_trace_is_unbiased_within_its_error():
    A, lam = spectrum_matrix(P=100, seed=2)
    op = hessext.HessianOperator(lambda V: A @ V, A.shape[0])
    est, se = op.trace(400, return_std=True, seed=3)
    assert abs(est - float(lam.sum())) <= 5 * se  # 5 standard errors: fails with p < 1e-6
    Adiag = torch.diag(lam)  # diagonal: Rademacher probes are exact
    assert abs(hessext.HessianOperator(lambda V: Adiag @ V, 100).trace(3) - float(lam.sum())) < 1e-10


def test_operator_dense_size_check():
    op = hessext.HessianOperator(lambda V: V, 10_000)
    with pytest.raises(MemoryError, match="GiB"):
        op.dense(max_bytes=10**6)
