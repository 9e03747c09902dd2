"""Reading a bottleneck: a planted monotone map is found (either direction) with R² near 1
out of sample, an unrelated quantity scores near 0, and the within-group comparison tells apart
two quantities that move together across groups."""

import numpy as np
import pytest

from hessext.interpret import monotone_fit, r2_score, read_bottleneck


def test_r2_score():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(4, y.mean())) == 0.0
    assert np.isnan(r2_score(np.ones(3), np.zeros(3)))


def test_a_planted_monotone_map_is_recovered():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 4000)
    noise = 1e-3 * rng.standard_normal(x.size)
    up = monotone_fit(np.exp(2 * x) + noise, x, name="x")
    assert up.increasing and up.r2 > 0.999
    # the fitted map is the planted one to the noise level (plus the step function's resolution)
    grid = np.linspace(-0.9, 0.9, 50)
    np.testing.assert_allclose(up(grid), np.exp(2 * grid), atol=0.02)
    down = monotone_fit(-(x**3) + noise, x)
    assert not down.increasing and down.r2 > 0.99
    unrelated = monotone_fit(rng.standard_normal(x.size), x)
    assert unrelated.r2 < 0.01  # out of sample: the step function cannot fit noise


def test_within_groups_tells_apart_quantities_that_move_together():
    """Across groups a and e both shift with the group; q is a function of e only. Pooled, both
    explain most of q; within a group only e does."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(10), 300)
    e = g + rng.standard_normal(g.size)
    a = g + rng.standard_normal(g.size)
    q = np.tanh(0.3 * e)
    r = read_bottleneck(q, {"a": a, "e": e}, groups=g)
    assert r.quantity == "e"
    assert r.r2["e"] > 0.999 and r.r2["a"] > 0.5
    assert r.r2_within["e"] > 0.95 and r.r2_within["a"] < 0.02
    assert read_bottleneck(q, {"a": a, "e": e}).r2_within is None


def test_bad_input():
    with pytest.raises(ValueError, match="n >= 4"):
        monotone_fit([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        monotone_fit([1.0, 2.0, np.nan, 4.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="no candidate"):
        read_bottleneck([1.0, 2.0, 3.0, 4.0], {})
    with pytest.raises(ValueError, match="groups must be"):
        read_bottleneck(np.arange(5.0), {"x": np.arange(5.0)}, groups=np.arange(4))
