"""Kepler orbits: the integrator against exact orbital mechanics (conservation of E, L_z and the
Runge–Lenz vector, the period, the apocentre), and the Siamese pairs built on it."""

import math

import pytest
import torch

from hessext.datasets import central_potential_pairs, integrate_kepler, kepler_invariants
from hessext.datasets.kepler import ORBIT_MAX_ECCENTRICITY, ORBIT_SEMI_MAJOR, pericentre_states

# The bar for conservation along generated trajectories. Forest–Ruth's error is
# O((dt/τ)⁴) with τ the pericentre time scale; at the default 1500 steps per period the worst
# orbit drawn (a = 0.7, e = 0.6) changes E by ~2e-8 (relative) and A by ~6e-8 per period (the
# pericentre's precession, which grows linearly in time).
TOL = 1e-6


def _orbits():
    """Orbits spanning the drawn range, the corners included: a × e × sense."""
    a = torch.tensor([ORBIT_SEMI_MAJOR[0], 1.0, ORBIT_SEMI_MAJOR[1]], dtype=torch.float64)
    e = torch.tensor([0.0, 0.3, ORBIT_MAX_ECCENTRICITY], dtype=torch.float64)
    aa, ee = torch.meshgrid(a, e, indexing="ij")
    aa, ee = aa.reshape(-1).repeat(2), ee.reshape(-1).repeat(2)
    sense = torch.cat([torch.ones(9), -torch.ones(9)]).double()
    omega = torch.linspace(0, 2 * math.pi, 18, dtype=torch.float64)
    return aa, ee, omega, sense


def test_invariants_of_a_pericentre_state_are_the_orbital_elements():
    a, e, omega, sense = _orbits()
    inv = kepler_invariants(pericentre_states(a, e, omega, sense))
    torch.testing.assert_close(inv.energy, -1 / (2 * a), rtol=1e-14, atol=0)
    torch.testing.assert_close(
        inv.angular_momentum, sense * torch.sqrt(a * (1 - e * e)), rtol=1e-14, atol=1e-15
    )
    # the Runge–Lenz vector has length e and points at the pericentre (direction ω)
    want = torch.stack([e * torch.cos(omega), e * torch.sin(omega)], 1)
    torch.testing.assert_close(inv.runge_lenz, want, rtol=0, atol=1e-14)


def test_energy_angular_momentum_and_runge_lenz_are_conserved_along_trajectories():
    a, e, omega, sense = _orbits()
    state = pericentre_states(a, e, omega, sense)
    start = kepler_invariants(state)
    period = 2 * math.pi * a**1.5
    # ten successive legs of 0.37 periods each (3.7 orbits), 555 steps a leg (1500 per period)
    for _ in range(10):
        state = integrate_kepler(state, 0.37 * period, steps=555)
        now = kepler_invariants(state)
        assert ((now.energy - start.energy).abs() / start.energy.abs()).max() < TOL
        assert (now.angular_momentum - start.angular_momentum).abs().max() < TOL
        assert (now.runge_lenz - start.runge_lenz).norm(dim=1).max() < TOL


def test_after_one_period_the_state_returns_and_after_half_it_is_at_the_apocentre():
    a, e, omega, sense = _orbits()
    start = pericentre_states(a, e, omega, sense)
    period = 2 * math.pi * a**1.5  # Kepler's third law for G·M = 1
    # The integrator's phase error after one period is O(dt⁴): halving the step divides it by
    # 16 (fourth order; 10-22 allows for the next order), and at the default it is < 3e-6.
    err = [(integrate_kepler(start, period, steps=k) - start).abs().max().item() for k in (750, 1500)]
    assert 10 < err[0] / err[1] < 22
    assert err[1] < 3e-6
    half = integrate_kepler(start, period / 2)
    r = half[:, :2].norm(dim=1)
    torch.testing.assert_close(r, a * (1 + e), rtol=1e-7, atol=0)
    # at the apocentre the position is opposite to the pericentre direction
    want = -torch.stack([torch.cos(omega), torch.sin(omega)], 1) * (a * (1 + e)).unsqueeze(1)
    assert (half[:, :2] - want).abs().max() < 3e-6


def test_zero_time_and_float32_input():
    a, e, omega, sense = _orbits()
    start = pericentre_states(a, e, omega, sense)
    assert torch.equal(integrate_kepler(start, 0.0, steps=3), start)
    out = integrate_kepler(start.float(), 0.1, steps=10)
    assert out.dtype == torch.float64


def test_pairs_positives_share_every_invariant_negatives_come_from_other_orbits():
    n = 3001
    a, b, same = central_potential_pairs(n, seed=4)
    assert a.shape == b.shape == (n, 4) and a.dtype == b.dtype == torch.float64
    assert same.dtype == torch.bool and same.shape == (n,) and int((~same).sum()) == n // 2
    ia, ib = kepler_invariants(a), kepler_invariants(b)
    p = same
    assert ((ia.energy - ib.energy)[p].abs() / ia.energy[p].abs()).max() < TOL
    assert (ia.angular_momentum - ib.angular_momentum)[p].abs().max() < TOL
    assert (ia.runge_lenz - ib.runge_lenz)[p].norm(dim=1).max() < TOL
    # the two states of a positive pair are different points of the orbit
    assert (a - b)[p].norm(dim=1).min() > 0
    # a negative's b is the partner of another pair's a: its invariants match that a, not its own
    key_a = torch.stack([ia.energy, ia.angular_momentum, *ia.runge_lenz.T], 1)
    key_b = torch.stack([ib.energy, ib.angular_momentum, *ib.runge_lenz.T], 1)
    dist = torch.cdist(key_b[~p], key_a)
    own = torch.nonzero(~p).squeeze(1)
    assert (dist.min(1).values < 1e-6).all()
    assert (dist.argmin(1) != own).all()
    # the orbits fill the advertised range
    assert ia.energy.min() >= -1 / (2 * ORBIT_SEMI_MAJOR[0]) - 1e-6
    assert ia.energy.max() <= -1 / (2 * ORBIT_SEMI_MAJOR[1]) + 1e-6
    assert ia.runge_lenz.norm(dim=1).max() <= ORBIT_MAX_ECCENTRICITY + 1e-6
    assert (ia.angular_momentum > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_pairs_are_seeded():
    one = central_potential_pairs(50, seed=1, steps=50)
    again = central_potential_pairs(50, seed=1, steps=50)
    other = central_potential_pairs(50, seed=2, steps=50)
    assert all(torch.equal(u, v) for u, v in zip(one, again))
    assert not torch.equal(one[0], other[0])
    a, b, same = central_potential_pairs(1, seed=0, steps=10)
    assert same.tolist() == [True]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n=0, seed=0), ValueError, "n must be >= 1"),
        (dict(n=-3, seed=0), ValueError, "n must be >= 1"),
        (dict(n=2.0, seed=0), TypeError, "n must be an int"),
        (dict(n=True, seed=0), TypeError, "n must be an int"),
        (dict(n=4, seed="0"), TypeError, "seed must be an int"),
    ],
)
def test_pairs_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        central_potential_pairs(**kwargs)


def test_integrator_bad_input():
    s = pericentre_states(*(t[:2] for t in _orbits()))
    with pytest.raises(TypeError, match="states must be a torch.Tensor"):
        integrate_kepler(s.tolist(), 1.0)
    with pytest.raises(ValueError, match=r"float tensor \[N, 4\]"):
        integrate_kepler(s[:, :3], 1.0)
    with pytest.raises(ValueError, match=r"float tensor \[N, 4\]"):
        kepler_invariants(s.long())
    with pytest.raises(ValueError, match="t must be a finite number >= 0"):
        integrate_kepler(s, -1.0)
    with pytest.raises(ValueError, match="t must be a finite number >= 0"):
        integrate_kepler(s, torch.ones(5))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        integrate_kepler(s, 1.0, steps=0)
    with pytest.raises(ValueError, match="r = 0"):
        integrate_kepler(torch.zeros(1, 4, dtype=torch.float64), 1.0)
