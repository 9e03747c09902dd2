"""The four-quadrant function and its smoothed Hessian at the origin, against an independent
quadrature of ∇²(f * N(0, σI))(0) = E[f(y)(yyᵀ/σ² − I/σ)] (no Stein's lemma, no gradients)."""

import math

import numpy as np
import pytest
import torch

from hessext.datasets import four_quadrant as fq


def _quadrature_hessian(c, sigma):
    """E[f(y)(yyᵀ − σI)]/σ², y ~ N(0, σI), in polar coordinates: f = ρ² c_q cosθ sinθ, so
    E[f y_i y_j] = E[ρ⁴]·(1/2π)∫ c_q cs u_i u_j dθ and E[f] = E[ρ²]·(1/2π)∫ c_q cs dθ, with
    E[ρ²] = 2σ, E[ρ⁴] = 8σ² for the 2-D Gaussian; the θ integrals by Gauss-Legendre per quadrant
    (smooth there: exact to rounding)."""
    nodes, weights = np.polynomial.legendre.leggauss(40)
    H = np.zeros((2, 2))
    for q, cq in enumerate(c):  # quadrant q spans θ ∈ [qπ/2, (q+1)π/2]
        th = (nodes + 1) * math.pi / 4 + q * math.pi / 2
        w = weights * math.pi / 4
        u = np.stack([np.cos(th), np.sin(th)])
        cs = np.cos(th) * np.sin(th)
        ef = 2 * sigma * np.sum(w * cq * cs) / (2 * math.pi)
        for i in range(2):
            for j in range(2):
                efyy = 8 * sigma**2 * np.sum(w * cq * cs * u[i] * u[j]) / (2 * math.pi)
                H[i, j] += (efyy - (sigma * ef if i == j else 0.0)) / sigma**2
    return H


@pytest.mark.parametrize("c", [fq.PAPER_C, (1.0, 2.0, -3.0, 0.5)])
@pytest.mark.parametrize("sigma", [1e-3, 1.0])
def test_closed_form_equals_quadrature(c, sigma):
    np.testing.assert_allclose(
        fq.smoothed_hessian_at_origin(c).numpy(), _quadrature_hessian(c, sigma), atol=1e-12
    )


def test_paper_values():
    H = fq.smoothed_hessian_at_origin()
    assert float(H[0, 1]) == 2.5
    assert abs(float(H[0, 0]) - 24 / (2 * math.pi)) < 1e-15 and abs(float(H[1, 1]) - 3.8197) < 1e-4


def test_function_values_by_quadrant():
    x = torch.tensor([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])
    # the paper's checkpoint: f(2,2) = 19.9, f(-2,2) = 39.9, f(-2,-2) = 47.9, f(2,-2) = -11.9
    assert fq.four_quadrant(x).tolist() == [20.0, 40.0, 48.0, -12.0]
    assert fq.four_quadrant(x.double()).dtype == torch.float64


def test_scale_mixture_seeded_and_spread():
    x, s = fq.scale_mixture(4096, low=0.02, high=1.5, seed=3)
    x2, s2 = fq.scale_mixture(4096, low=0.02, high=1.5, seed=3)
    assert torch.equal(x, x2) and torch.equal(s, s2)
    assert x.shape == (4096, 2) and x.dtype == torch.float32
    assert s.min() >= 0.02 * (1 - 1e-6) and s.max() <= 1.5 * (1 + 1e-6)
    # log-uniform scales: the median of log s is the middle of the range
    assert abs(float(s.log().median()) - 0.5 * math.log(0.02 * 1.5)) < 0.1


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        fq.four_quadrant(torch.zeros(3))
    with pytest.raises(ValueError, match="4 finite"):
        fq.smoothed_hessian_at_origin((1.0, 2.0))
    with pytest.raises(ValueError, match="low < high"):
        fq.scale_mixture(10, low=1.0, high=0.5, seed=0)
