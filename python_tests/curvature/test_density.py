"""Stochastic Lanczos quadrature: exact on operators whose eigenvectors are coordinate axes
(Rademacher weights are then exactly 1/P), the density's normalisation, its trace and log-det
estimates against exact values, and the operator's logdet."""

import math

import pytest
import torch

import hessext
from hessext.curvature import HessianOperator, spectral_density
from hessext.curvature.diagonal import DiagonalCurvature
from hessext.testing import ce, mlp, relative_error


def test_exact_on_a_diagonal_operator():
    lam = torch.linspace(0.1, 5.0, 40, dtype=torch.float64)
    D = DiagonalCurvature.from_values(lam)
    s = spectral_density(D, num_probes=3, num_steps=40, seed=0)
    # every probe's quadrature puts weight 1/P on every eigenvalue
    assert math.isclose(s.trace(), float(lam.sum()), rel_tol=1e-10)
    assert math.isclose(s.logdet(0.5), float((lam + 0.5).log().sum()), rel_tol=1e-10)
    grid, phi = s.density(sigma=0.05)
    integral = float(torch.trapezoid(phi, grid))
    assert abs(integral - 1.0) <= 1e-3  # the Gaussian tails beyond ±3σ hold 2.7e-3 / 2 per side at most
    with pytest.raises(ValueError, match="damping must exceed"):
        s.logdet(-1.0)


def test_trace_and_logdet_of_a_dense_hessian():
    torch.manual_seed(0)
    model = mlp((3, 5, 3)).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g)
    H = hessext.ggn(model, ce, (x, y), progress=False)
    P = H.num_params
    exact = torch.linalg.eigvalsh(H.dense())
    s = spectral_density(H, num_probes=200, num_steps=P, seed=2)
    # full-length Lanczos: each probe's quadrature is exact for zᵀ f(H) z, so the estimate is
    # Hutchinson's for tr f(H): its error is statistical, a few % with 200 probes here
    assert relative_error(torch.tensor(s.trace()), exact.sum()) <= 0.1
    delta = 0.1
    assert relative_error(torch.tensor(s.logdet(delta)), (exact + delta).log().sum()) <= 0.1
    assert math.isclose(H.logdet(delta), float((exact + delta).log().sum()), rel_tol=1e-10)
    op = HessianOperator(lambda V: H.dense() @ V, P)
    assert (
        relative_error(
            torch.tensor(op.logdet(delta, num_probes=200, num_steps=P)), (exact + delta).log().sum()
        )
        <= 0.1
    )
