"""range_eigh against closed forms (planted spectra) and against the full torch.linalg.eigh of a
real Hessian."""

import pytest
import torch
from torch import nn

from hessext.curvature import hessian, range_eigh
from hessext.datasets import toy2d
from hessext.models import mlp
from hessext.training import train

EPS = torch.finfo(torch.float64).eps


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    # small dense products gain nothing from a second thread; on a loaded machine its
    # spin-waiting made these tests ~6x slower (measured)
    torch.set_num_threads(1)


def _planted(P=400, values=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    if values is None:  # both signs, eleven decades
        mags = torch.logspace(1, -10, 60, dtype=torch.float64)
        values = mags * torch.where(torch.arange(60) % 7 == 3, -1.0, 1.0).double()
    U = torch.linalg.qr(torch.randn(P, len(values), generator=g, dtype=torch.float64))[0]
    A = (U * values) @ U.T
    return (A + A.T) / 2, values, U


def test_planted_spectrum_is_recovered_exactly():
    A, values, U = _planted()
    res = range_eigh(A, sketch=16)  # 16 < rank 60: the sketch must grow (doubling) to see it all
    assert res.method == "range" and res.rank == 60 and res.sketch >= 60 + 16
    # forming A rounds each entry by ~eps·|λ|max·(a few); every eigenvalue is then known to
    # ‖δA‖₂ ≤ P·eps·|λ|max (Weyl), the bound used here
    tol = A.shape[0] * EPS * float(values.abs().max())
    torch.testing.assert_close(res.eigenvalues, values.sort().values, atol=tol, rtol=0)
    # the same invariant subspace: the 60 eigenvectors span U's columns
    s = torch.linalg.svdvals(U.T @ res.eigenvectors)
    assert float((1 - s).abs().max()) < 1e-9
    torch.testing.assert_close(res.eigenvectors.T @ res.eigenvectors, torch.eye(60, dtype=torch.float64))
    assert res.residual < 1e-12
    full = res.spectrum()
    assert full.shape == (400,) and int((full == 0).sum()) == 340
    top_values, top_vectors = res.top(3)
    torch.testing.assert_close(top_values, values.sort(descending=True).values[:3], atol=tol, rtol=0)
    assert top_vectors.shape == (400, 3)


def test_full_rank_falls_back_to_eigh():
    A, values, _ = _planted(P=80, values=torch.linspace(1, 2, 80, dtype=torch.float64))
    res = range_eigh(A)
    assert res.method == "full" and res.rank == 80
    torch.testing.assert_close(res.eigenvalues, torch.linalg.eigh(A)[0])


def test_zero_matrix():
    res = range_eigh(torch.zeros(200, 200, dtype=torch.float64))
    assert res.method == "range" and res.rank == 0 and res.spectrum().tolist() == [0.0] * 200


def test_matches_full_eigh_on_a_trained_mlp_hessian():
    x, y = toy2d.three_gaussians()
    s = toy2d.split(x, y)
    xt, yt = s.x_train[:60], s.y_train[:60]  # few points: a Hessian of low rank (< P/4 here)
    model = mlp(2, 40, 40, 3, seed=0)
    train(model, xt, yt, epochs=100, lr=0.02, batch_size=64, seed=0)
    A = hessian(model, nn.CrossEntropyLoss(reduction="none"), (xt, yt), progress=False).dense()
    res = range_eigh(A, sketch=600)  # the rank is ~490 of P = 1,883
    values, _ = torch.linalg.eigh(A)
    P, scale = A.shape[0], float(values.abs().max())
    assert res.method == "range" and res.rank < P / 2
    # every eigenvalue of the full decomposition above the cut-off is found, to rounding
    # (both decompositions are backward stable: errors ≤ P·eps·‖A‖)
    big = values[values.abs() > 1e-10 * scale]
    found = res.eigenvalues[res.eigenvalues.abs() > 1e-10 * scale]
    assert len(found) == len(big)
    torch.testing.assert_close(found, big, atol=P * EPS * scale, rtol=0)
    # and nothing of size is left outside: the dropped part of the spectrum is below the cut-off
    assert float(values.abs().sort(descending=True).values[res.rank]) < 1e-9 * scale
    assert res.residual < 1e-10


def test_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        range_eigh(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="float64"):
        range_eigh(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="rtol"):
        range_eigh(torch.zeros(3, 3, dtype=torch.float64), rtol=0)
    with pytest.raises(ValueError, match="sketch"):
        range_eigh(torch.eye(3, dtype=torch.float64), sketch=0)
