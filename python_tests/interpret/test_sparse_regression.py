"""Sparse polynomial regression: planted laws recovered exactly (support) and to their standard
errors (coefficients), monomial naming, and clear errors."""

import math

import numpy as np
import pytest
import torch

from hessext.interpret import monomials, sparse_polynomial_fit

NAMES = ["x", "y", "v_x", "v_y"]


def _planted(n=4000, sigma=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    noise = sigma * torch.randn(n, generator=gen, dtype=torch.float64)
    z = -3.0 * X[:, 0] * X[:, 3] + 3.0 * X[:, 1] * X[:, 2] + 0.5 + noise
    return X, z


def test_recovers_a_planted_law_with_noise():
    n, sigma = 4000, 0.1
    X, z = _planted(n, sigma)
    e = sparse_polynomial_fit(z, X, NAMES, degree=2)
    assert set(e.coefficients) == {"x*v_y", "y*v_x"}
    # least squares on the true support: each coefficient's standard error is σ/(√n·std(m)),
    # and a product of independent standard normals has std 1
    se = sigma / math.sqrt(n)
    assert e.coefficients["x*v_y"] == pytest.approx(-3.0, abs=5 * se)
    assert e.coefficients["y*v_x"] == pytest.approx(3.0, abs=5 * se)
    assert e.intercept == pytest.approx(0.5, abs=5 * se * 2)
    # R² = 1 − σ²/Var(z) with Var(z) = 9 + 9 + σ², to the sampling error of the variances
    assert e.r2 == pytest.approx(1 - sigma**2 / (18 + sigma**2), abs=2e-4)
    assert e.r2 <= e.r2_all_terms + 1e-12
    assert e.n_candidates == 14 and e.degree == 2 and e.names == tuple(NAMES)
    # importance is the standardised coefficient: |c|·std(m)/std(z) ≈ 3/√18
    for m in e.importance:
        assert e.importance[m] == pytest.approx(3 / math.sqrt(18), rel=0.03)
    text = str(e)
    assert "x*v_y" in text and "y*v_x" in text and "R² = " in text and text.startswith("z ≈ ")


def test_coefficients_are_in_the_variables_units_and_predict_reproduces_the_fit():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(3000, 3, generator=gen, dtype=torch.float64) * torch.tensor([10.0, 0.01, 1.0]).double()
    X[:, 2] += 5.0  # a shifted variable: the intercept must absorb its mean
    z = 0.02 * X[:, 0] ** 2 - 40.0 * X[:, 1] * X[:, 2] + 7.0
    e = sparse_polynomial_fit(z.numpy(), X.numpy(), ["a", "b", "c"], degree=3, tolerance=1e-6)
    assert set(e.coefficients) == {"a^2", "b*c"}
    assert e.coefficients["a^2"] == pytest.approx(0.02, rel=1e-9)
    assert e.coefficients["b*c"] == pytest.approx(-40.0, rel=1e-9)
    assert e.intercept == pytest.approx(7.0, rel=1e-9)
    np.testing.assert_allclose(e.predict(X), z.numpy(), rtol=1e-9, atol=1e-9)
    assert e.r2 == pytest.approx(1.0, abs=1e-12)


def test_tolerance_trades_terms_for_r2():
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    z = 2 * X[:, 0] + 0.1 * X[:, 1] ** 2  # the second term carries 0.5 % of the variance
    loose = sparse_polynomial_fit(z, X, ["p", "q"], tolerance=0.01)
    tight = sparse_polynomial_fit(z, X, ["p", "q"], tolerance=0.0)
    assert list(loose.coefficients) == ["p"]
    assert set(tight.coefficients) >= {"p", "q^2"} and tight.r2 == pytest.approx(1.0, abs=1e-12)
    assert loose.r2_all_terms - 0.01 <= loose.r2 < tight.r2


def test_monomial_names():
    values, names = monomials(np.array([[2.0, 3.0]]), ["x", "y"], degree=3)
    assert names == ["x", "y", "x^2", "x*y", "y^2", "x^3", "x^2*y", "x*y^2", "y^3"]
    np.testing.assert_array_equal(values[0], [2, 3, 4, 6, 9, 8, 12, 18, 27])
    _, names = monomials(np.ones((1, 3)), ["a", "b", "c"], degree=2)
    assert len(names) == 9 and names[3] == "a^2" and names[4] == "a*b"


def test_a_column_z_and_a_constant_variable_are_accepted():
    X, z = _planted(500, 0.0)
    X = torch.cat([X, torch.ones(500, 1, dtype=torch.float64)], 1)  # a constant variable explains nothing
    e = sparse_polynomial_fit(z.unsqueeze(1), X, NAMES + ["one"], degree=2, target="L")
    assert set(e.coefficients) == {"x*v_y", "y*v_x"} and str(e).startswith("L ≈ ")


@pytest.mark.parametrize(
    "z, X, names, kwargs, error, match",
    [
        ("z", "X", ["x", "y", "v_x"], {}, ValueError, "names must be 4 non-empty strings"),
        ("z", "X", ["x", "x", "v_x", "v_y"], {}, ValueError, "distinct"),
        ("z", "X", ["x", "y*", "v_x", "v_y"], {}, ValueError, "contain no"),
        ("z", "X", "xyzw", {}, TypeError, "names must be a sequence"),
        ("z", "X", NAMES, {"degree": 0}, ValueError, "degree must be an int >= 1"),
        ("z", "X", NAMES, {"tolerance": 1.5}, ValueError, "tolerance must be a number in"),
        ("const", "X", NAMES, {}, ValueError, "z is constant"),
        ("short", "X", NAMES, {}, ValueError, "rows of z"),
        ("nan", "X", NAMES, {}, ValueError, "non-finite"),
        ("list", "X", NAMES, {}, TypeError, "z must be a torch.Tensor or numpy array"),
        ("z", "complex", NAMES, {}, TypeError, "real numbers"),
    ],
)
def test_bad_input(z, X, names, kwargs, error, match):
    Xv, zv = _planted(50)
    zs = {
        "z": zv,
        "const": torch.ones(50, dtype=torch.float64),
        "short": zv[:40],
        "nan": torch.full((50,), float("nan"), dtype=torch.float64),
        "list": zv.tolist(),
    }[z]
    Xs = {"X": Xv, "complex": Xv.numpy().astype(np.complex128)}[X]
    with pytest.raises(error, match=match):
        sparse_polynomial_fit(zs, Xs, names, **kwargs)
