"""Critical-point estimators against closed forms: crossings of curves with a known root, the
Binder cumulant of distributions with known U, a scaling collapse of data built from a known
T_c and ν, and the 1/L extrapolation of exact T_c + a/L."""

import numpy as np
import pytest

from hessext.interpret import binder_collapse, binder_cumulant, crossing, extrapolate_inverse_size


def test_crossing_of_a_level_and_of_two_curves():
    T = np.linspace(1.0, 3.0, 21)
    # a quadratic through the level is located exactly (the refinement is a quadratic fit)
    quad = 0.5 - (T - 2.27) - 0.4 * (T - 2.27) ** 2
    assert crossing(T, quad, level=0.5) == pytest.approx(2.27, abs=1e-12)
    # tanh: the quadratic misses its cubic term, an error up to ~ y3 h^3 / (6 |y1|) ~ 1e-2
    # (y1, y3 its first and third derivatives; 4 points over h = ±0.15, width 0.3)
    y = 0.5 - 0.5 * np.tanh((T - 2.27) / 0.3)  # falls through ½ at 2.27 (off the grid)
    assert crossing(T, y, level=0.5) == pytest.approx(2.27, abs=1e-2)
    assert crossing(T, 1 - y, level=0.5, direction="up") == pytest.approx(
        crossing(T, y, level=0.5), abs=1e-12
    )
    small, large = 0.3 - 0.5 * (T - 2.2), 0.3 - 1.5 * (T - 2.2)  # cross at 2.2 exactly (lines)
    assert crossing(T, small, y2=large) == pytest.approx(2.2, abs=1e-12)
    assert np.isnan(crossing(T, y, level=2.0))
    with pytest.raises(ValueError, match="exactly one"):
        crossing(T, y)
    with pytest.raises(ValueError, match="increasing"):
        crossing(T[::-1], y, level=0.5)


def test_binder_cumulant_of_known_distributions():
    assert binder_cumulant(np.array([1.0, -1.0, 1.0, -1.0])) == pytest.approx(2 / 3, abs=1e-15)
    z = np.random.default_rng(0).standard_normal(400_000)
    # U of a Gaussian is 0; its standard error here is ~ sqrt(24/n)/3 ≈ 2.6e-3
    assert abs(binder_cumulant(z)) < 0.011
    assert np.isnan(binder_cumulant(np.zeros(3)))


def test_binder_collapse_recovers_the_planted_tc_and_nu():
    tc, nu = 2.2692, 1.0
    g = lambda x: 0.6 - 0.2 * x + 0.03 * x**2 - 0.004 * x**3
    L = np.repeat([8.0, 16.0, 32.0], 25)
    T = np.tile(np.linspace(2.1, 2.45, 25), 3)
    U = g((T - tc) * L ** (1 / nu))
    fit = binder_collapse(L, T, U, tc0=2.3, nu0=0.8)
    assert fit.tc == pytest.approx(tc, abs=1e-6) and fit.nu == pytest.approx(nu, abs=1e-5)
    assert fit.rms < 1e-8


def test_inverse_size_extrapolation_is_exact_on_exact_data():
    L = np.array([8.0, 16.0, 32.0])
    ex = extrapolate_inverse_size(L, 2.2692 + 0.9 / L)
    assert ex.tc == pytest.approx(2.2692, abs=1e-12) and ex.slope == pytest.approx(0.9, abs=1e-10)
    assert ex.tc_error == pytest.approx(0.0, abs=1e-9)
    w = extrapolate_inverse_size(L, 2.2692 + 0.9 / L, errors=[0.01, 0.01, 0.01])
    assert w.tc == pytest.approx(2.2692, abs=1e-12) and w.tc_error > 0
    assert np.isnan(extrapolate_inverse_size([8.0], [2.3]).tc)
