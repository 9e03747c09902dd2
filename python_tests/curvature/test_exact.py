"""The Hessian object: exact linear algebra on a dense float64 matrix, and the stored reference."""

import pytest
import torch

import hessext
from hessext.curvature import NotPositiveDefiniteError
from hessext.testing import shared_dir


def indefinite(P=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.linspace(-0.5, 10, P, dtype=torch.float64)
    return Q @ torch.diag(lam) @ Q.T, lam


def test_basic_surface():
    A, lam = indefinite()
    H = hessext.Hessian.from_matrix(A.numpy(), n=7, description="test")
    assert H.num_params == 40 and H.info["n"] == 7 and H.meta is H.info
    V = torch.randn(40, 3, dtype=torch.float64)
    assert torch.allclose(H @ V, A @ V, atol=1e-12) and torch.allclose(H @ V[:, 0], A @ V[:, 0], atol=1e-12)
    assert torch.allclose(torch.from_numpy(H.to_scipy() @ V.numpy()), A @ V, atol=1e-12)
    assert H.dense().dtype == torch.float64 and torch.equal(H.dense(), H.dense().T)
    assert abs(H.trace() - float(lam.sum())) < 1e-10
    vals, vecs = H.eigh()
    assert H.eigh()[0] is vals  # cached, computed once
    assert torch.allclose(vals, lam, atol=1e-12)
    top, U = H.top_eigenpairs(3)
    assert torch.allclose(top, lam.flip(0)[:3], atol=1e-12)
    assert torch.allclose(A @ U, U * top, atol=1e-10)
    low, _ = H.smallest_eigenpairs(2)
    assert torch.allclose(low, lam[:2], atol=1e-12) and abs(H.lambda_min() + 0.5) < 1e-12
    with pytest.raises(ValueError, match="k must be"):
        H.top_eigenpairs(0)


def test_solves_refuse_indefinite_and_agree_when_damped():
    A, lam = indefinite()
    H = hessext.Hessian.from_matrix(A)
    B = torch.randn(40, 5, dtype=torch.float64)
    for method in ("cholesky", "eigh", "cg"):
        with pytest.raises(NotPositiveDefiniteError, match=r"lambda_min\(H\) = -0\.5.*damping > 0\.5"):
            H.solve(B, damping=0.3, method=method)
    truth = torch.linalg.solve(A + 0.7 * torch.eye(40, dtype=torch.float64), B)
    for method in ("cholesky", "eigh", "cg"):
        X = H.solve(B, damping=0.7, method=method)
        assert float((X - truth).norm() / truth.norm()) < 1e-9, method
        assert H.info["last_solve"] == {"method": method, "damping": 0.7}
    assert H.solve(B[:, 0], damping=0.7).shape == (40,)


def test_pinv_drops_and_says_so():
    A, lam = indefinite()
    lam = lam.clone()
    lam[5] = 1e-14
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(lam) @ Q.T
    H = hessext.Hessian.from_matrix(A)
    v = torch.randn(40, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="dropped 1 of 40"):
        x = H.pinv(v, rcond=1e-10)
    keep = torch.ones(40, dtype=torch.bool)
    keep[5] = False
    truth = Q[:, keep] @ ((Q[:, keep].T @ v) / lam[keep])
    assert torch.allclose(x, truth, atol=1e-9)
    assert H.info["last_pinv"]["dropped"] == 1 and H.info["last_pinv"]["negative_kept"] > 0


def test_reference_hessian_spectrum():
    """The toolbox's stored Hessian (float32, P = 740): the facts its README states."""
    shared = shared_dir()
    if shared is None:
        pytest.skip("shared/reference/hessian_toolbox_ll_cdw not found next to the repository")
    path = shared / "reference" / "hessian_toolbox_ll_cdw" / "Conv1D_original_l005_12site_hessian.npy"
    H = hessext.Hessian.from_matrix(path, n=1000, description="Conv1D_original_l005_12site")
    assert H.num_params == 740 and H.info["asymmetry"] < 1e-5
    vals, _ = H.eigh()
    assert round(float(vals[-1]), 3) == 68.603
    assert round(float(vals[-2]), 4) == 0.5504 and round(float(vals[-3]), 4) == 0.2243
    assert round(H.lambda_min(), 4) == -0.1820
    assert int((vals < 0).sum()) == 99
    assert round(H.trace(), 2) == 70.70
    assert int((vals.abs() < 1e-4).sum()) == 517
    with pytest.raises(NotPositiveDefiniteError, match="damping > 0.182"):
        H.solve(torch.ones(740), damping=0.1)
    H.solve(torch.ones(740), damping=0.2)  # the toolbox's influence damping is enough
