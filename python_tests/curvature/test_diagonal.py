"""diag_ggn against the exact GGN's diagonal (torch.func, float64) on models with kernel layers,
convolutions, sequences and layers without a kernel; Hutchinson's diagonal against the exact
Hessian's within its own reported standard errors; the diagonal curvature's interface."""

import math

import pytest
import torch
from torch import nn

import hessext
from hessext.curvature import NotPositiveDefiniteError
from hessext.regularizers import L2
from hessext.testing import CNN2d, bn_mlp, ce, mse, reference_ggn, reference_hessian, relative_error

EXACT = 1e-12


def _classification(shape, n=15, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), (4,)),
        (CNN2d, (1, 6, 6)),
        (bn_mlp, (4,)),  # BatchNorm goes through torch.func
    ],
)
def test_diag_ggn_is_the_exact_diagonal(make, shape):
    torch.manual_seed(0)
    model = make().double()
    x, y = _classification(shape)
    D = hessext.diag_ggn(model, ce, (x, y), progress=False)
    want = reference_ggn(model, "ce", (x, y)).diagonal()
    assert relative_error(D.diagonal(), want, "max") <= EXACT
    Dr = hessext.diag_ggn(model, ce, [(x[:4], y[:4]), (x[4:], y[4:])], regularizer=L2(0.1), progress=False)
    assert relative_error(Dr.diagonal(), want + 0.1, "max") <= EXACT


def test_diag_ggn_mse_and_interface():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    g = torch.Generator().manual_seed(2)
    x, y = (
        torch.randn(9, 3, generator=g, dtype=torch.float64),
        torch.randn(9, 2, generator=g, dtype=torch.float64),
    )
    D = hessext.diag_ggn(model, mse, (x, y), progress=False)
    d = reference_ggn(model, "mse", (x, y)).diagonal()
    V = torch.randn(D.num_params, 2, dtype=torch.float64)
    assert relative_error(D @ V, d.unsqueeze(1) * V) <= EXACT
    assert relative_error(D.solve(V, damping=0.1), V / (d + 0.1).unsqueeze(1)) <= EXACT
    assert math.isclose(D.logdet(damping=0.1), float((d + 0.1).log().sum()), rel_tol=EXACT)
    lam, U = D.top_eigenpairs(3)
    assert relative_error(lam, d.sort(descending=True).values[:3], "max") <= EXACT
    assert torch.equal(U.abs().sum(0), torch.ones(3, dtype=torch.float64))  # unit vectors e_j
    assert relative_error(d[U.argmax(0)], lam, "max") <= EXACT
    assert "diagonal of the generalised Gauss-Newton" in D.describe()


def test_hutchinson_diagonal_within_its_standard_errors():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = _classification((3,), n=12)
    H = reference_hessian(model, ce, (x, y))
    est = hessext.hutchinson_diagonal(model, ce, (x, y), num_samples=400, seed=1, progress=False)
    se = est.info["std_error"]
    err = (est.diagonal() - H.diagonal()).abs()
    # z-scores of P = 31 seeded estimates: the largest stays below 5 (a 5σ bound)
    assert bool((err <= 5 * se + 1e-12).all()), (err / se).max()
    # the Hessian's diagonal has negative entries here: a damped solve needs δ > -min
    if float(est.diagonal().min()) < 0:
        with pytest.raises(NotPositiveDefiniteError, match="damping"):
            est.solve(torch.ones(est.num_params, dtype=torch.float64), damping=0.0)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        hessext.hutchinson_diagonal(model, ce, (x, y), num_samples=1)
