"""A particle in the Kepler potential V = −1/r: bound orbits, a symplectic integrator, and the
pairs of states of the Siamese-network study (Wetzel et al. 2020; docs/wetzel-invariants.md).

Units: G·M = 1 and mass 1, so the Hamiltonian of a state s = (x, y, v_x, v_y) is
H = (v_x² + v_y²)/2 − 1/r with r = √(x² + y²). Along a trajectory three quantities are
conserved: the energy E = H, the angular momentum L_z = x v_y − y v_x, and the Runge–Lenz
vector A = v × L − r/|r| = (v_y L_z − x/r, −v_x L_z − y/r), which points at the pericentre
and has length e (the eccentricity). For a bound orbit (E < 0) with semi-major axis a:
E = −1/(2a), L_z² = a(1 − e²), period P = 2π a^{3/2}.

The trajectories are integrated with the fourth-order symplectic composition of velocity
Verlet (Forest–Ruth / Yoshida): each orbit takes the same number of steps over its own time
span, so a batch of orbits is one vectorised loop. Velocity Verlet conserves L_z exactly
(a central force gives no torque in either the kick or the drift) up to rounding; the energy
and the Runge–Lenz vector oscillate with an error O((dt/τ)⁴), τ the time scale at the
pericentre. With the default 1500 steps per period the largest change over the orbits
central_potential_pairs draws is ~2e-8 in E (relative) and ~6e-8 in A (the pericentre's
precession, which grows linearly in time: a trajectory stays within 1e-6 for ~15 periods).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from hessext.datasets._checks import check_float_matrix, check_n_seed
from hessext.datasets._pairs import negatives_by_permutation

__all__ = [
    "ORBIT_SEMI_MAJOR",
    "ORBIT_MAX_ECCENTRICITY",
    "KeplerInvariants",
    "kepler_invariants",
    "integrate_kepler",
    "pericentre_states",
    "central_potential_pairs",
]

# The orbits of central_potential_pairs: semi-major axis a ~ U[ORBIT_SEMI_MAJOR], eccentricity
# e ~ U[0, ORBIT_MAX_ECCENTRICITY], pericentre direction ω ~ U[0, 2π), sense ±1 with equal
# probability. Then |L_z| = √(a(1 − e²)) lies in [0.61, 1.41] with either sign, E in
# [−0.71, −0.36], and the states within r ∈ [0.28, 3.4], |v| ≤ 2.5.
ORBIT_SEMI_MAJOR = (0.7, 2.0)
ORBIT_MAX_ECCENTRICITY = 0.6

# Forest–Ruth (Yoshida) coefficients: three velocity-Verlet substeps of w1·dt, w0·dt, w1·dt.
_CBRT2 = 2.0 ** (1.0 / 3.0)
_W1 = 1.0 / (2.0 - _CBRT2)
_W0 = -_CBRT2 / (2.0 - _CBRT2)


class KeplerInvariants(NamedTuple):
    """The conserved quantities of states [N, 4]: energy [N], angular momentum L_z [N],
    Runge–Lenz vector [N, 2]."""

    energy: torch.Tensor
    angular_momentum: torch.Tensor
    runge_lenz: torch.Tensor


def _check_states(states, fn: str) -> torch.Tensor:
    return check_float_matrix(states, "states", "x, y, v_x, v_y", fn)


def kepler_invariants(states: torch.Tensor) -> KeplerInvariants:
    """E, L_z and the Runge–Lenz vector A of states [N, 4] = (x, y, v_x, v_y) in V = −1/r."""
    s = _check_states(states, "kepler_invariants")
    x, y, vx, vy = s.unbind(1)
    r = torch.sqrt(x * x + y * y)
    energy = 0.5 * (vx * vx + vy * vy) - 1.0 / r
    lz = x * vy - y * vx
    runge_lenz = torch.stack([vy * lz - x / r, -vx * lz - y / r], dim=1)
    return KeplerInvariants(energy, lz, runge_lenz)


def _accelerate(x: torch.Tensor, y: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor) -> None:
    """(ax, ay) ← −(x, y)/r³, the force of V = −1/r at positions x, y [N] (in place)."""
    inv_r = torch.addcmul(x * x, y, y).rsqrt_()
    inv_r3 = inv_r * inv_r
    inv_r3.mul_(inv_r)
    torch.mul(x, inv_r3, out=ax).neg_()
    torch.mul(y, inv_r3, out=ay).neg_()


def integrate_kepler(states: torch.Tensor, t, *, steps: int = 1500) -> torch.Tensor:
    """The states [N, 4] after time ``t`` (a number or [N], ≥ 0; each orbit its own time) in
    V = −1/r, by ``steps`` fourth-order symplectic steps of size t/steps. float64 throughout
    (float32 input is promoted); returns float64 [N, 4]."""
    s = _check_states(states, "integrate_kepler").to(torch.float64)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"integrate_kepler: steps must be an int >= 1, got {steps!r}")
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() == 0:
        t = t.expand(len(s))
    if t.shape != (len(s),) or not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(
            f"integrate_kepler: t must be a finite number >= 0 or such a tensor [{len(s)}], "
            f"got shape {tuple(t.shape)}"
        )
    if len(s) and (s[:, :2].pow(2).sum(1) == 0).any():
        raise ValueError("integrate_kepler: a state sits at r = 0, where V = −1/r is singular")
    dt = t / steps
    # One [N] tensor per coordinate, updated in place: a few elementwise kernels per substep.
    # Consecutive half kicks are merged: the chain is kick(½w₁) drift(w₁) kick(½(w₁+w₀))
    # drift(w₀) kick(½(w₀+w₁)) drift(w₁) kick(w₁) drift(w₁) ... kick(½w₁), all times dt.
    x, y, vx, vy = (c.clone() for c in s.unbind(1))
    ax, ay = torch.empty_like(x), torch.empty_like(x)
    drifts = [w * dt for w in (_W1, _W0, _W1)]
    inner = [0.5 * (_W1 + _W0) * dt, 0.5 * (_W0 + _W1) * dt]
    between, half = _W1 * dt, 0.5 * _W1 * dt

    def kick(h):
        _accelerate(x, y, ax, ay)
        vx.addcmul_(h, ax)
        vy.addcmul_(h, ay)

    kick(half)
    for step in range(steps):
        for j, drift in enumerate(drifts):
            x.addcmul_(drift, vx)
            y.addcmul_(drift, vy)
            kick(inner[j] if j < 2 else (between if step < steps - 1 else half))
    return torch.stack([x, y, vx, vy], dim=1)


def pericentre_states(a: torch.Tensor, e: torch.Tensor, omega: torch.Tensor, sense: torch.Tensor):
    """States [N, 4] at the pericentre of the orbits with semi-major axes ``a``, eccentricities
    ``e`` (0 ≤ e < 1), pericentre directions ``omega`` (radians) and senses ``sense`` (±1:
    counter-clockwise or clockwise), all [N]; float64."""
    a, e, omega, sense = (torch.as_tensor(v, dtype=torch.float64) for v in (a, e, omega, sense))
    rp = a * (1.0 - e)
    vp = torch.sqrt((1.0 + e) / rp)  # vis-viva at r = a(1 − e)
    c, s = torch.cos(omega), torch.sin(omega)
    # position along (cos ω, sin ω), velocity perpendicular to it, turning with `sense`
    return torch.stack([rp * c, rp * s, -sense * vp * s, sense * vp * c], dim=1)


def central_potential_pairs(n: int, *, seed: int, steps: int = 1500):
    """(a, b, same): n pairs of states [n, 4] float64 = (x, y, v_x, v_y) in V = −1/r, and a
    bool [n] marking the positives.

    Each pair belongs to one bound orbit drawn as ORBIT_SEMI_MAJOR / ORBIT_MAX_ECCENTRICITY
    describe (uniform pericentre direction and sense); a and b are its states at two times
    drawn uniformly over one period after the pericentre, integrated by
    :func:`integrate_kepler` (``steps`` steps each). Then ⌊n/2⌋ pairs chosen at random become
    negatives: their b is replaced by the b of another pair (a random derangement), so a
    negative pair's states belong to two different orbits. Seeded by ``seed`` alone."""
    check_n_seed(n, seed, "central_potential_pairs")
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 5, generator=gen, dtype=torch.float64)
    lo, hi = ORBIT_SEMI_MAJOR
    a_axis = lo + (hi - lo) * u[:, 0]
    ecc = ORBIT_MAX_ECCENTRICITY * u[:, 1]
    omega = 2.0 * math.pi * u[:, 2]
    sense = torch.where(u[:, 3] < 0.5, -1.0, 1.0).to(torch.float64)
    start = pericentre_states(a_axis, ecc, omega, sense)
    period = 2.0 * math.pi * a_axis**1.5
    times = torch.rand(2, n, generator=gen, dtype=torch.float64) * period
    both = integrate_kepler(torch.cat([start, start]), times.reshape(-1), steps=steps)
    a, b = both[:n], both[n:]
    b, same = negatives_by_permutation(b, gen)
    return a, b, same
