"""Speed and accuracy of the invariants stage's tools, against what a user would otherwise run,
measured in the same run.

Run: python bench/bench_invariants.py      (or pytest bench/bench_invariants.py -s)
     HESSEXT_BENCH_FULL=1 ...  more orbits and repeats.

Rows (median wall and CPU seconds of REPEATS calls after a first call, which is reported
separately; peak memory = growth of the process's high-water RSS over the first call):
- Kepler orbits, N orbits (a, e as central_potential_pairs draws them) to times uniform over
  one period:
  * hessext.integrate_kepler: the vectorised fourth-order symplectic integrator, 1500 steps;
  * floor: the 3·1500 force evaluations alone (the integrator's unavoidable work, vectorised);
  * scipy solve_ivp DOP853 (rtol 1e-10, atol 1e-12), one call per orbit (the usual tool),
    timed on a subset and scaled to N;
  * torch velocity Verlet (second order, vectorised) at the step count that reaches the same
    worst energy error.
  Each with the worst relative energy error and Runge–Lenz change over the orbits.
- Sparse regression of a 1-neuron latent on 27 degree-2 monomials (4000 samples):
  hessext.sparse_polynomial_fit (OMP path) vs scikit-learn's LassoCV (5-fold) on the same
  standardised monomials; the number of terms each keeps.
- Twin prediction: twin_predict over 1001 points × 128 anchors vs a Python loop over anchors.
No assertions on time.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

from hessext.datasets import integrate_kepler, kepler_invariants, lorentz_pairs
from hessext.datasets.kepler import ORBIT_MAX_ECCENTRICITY, ORBIT_SEMI_MAJOR, pericentre_states
from hessext.interpret import monomials, sparse_polynomial_fit, twin_predict
from hessext.models import TwinNet

FULL = os.environ.get("HESSEXT_BENCH_FULL", "") == "1"
REPEATS = 5 if FULL else 2
N_ORBITS = 20000 if FULL else 4000
N_SCIPY = 100 if FULL else 30
STEPS = 1500


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(fn):
    """(result, first-call seconds, median wall, median CPU, peak MB growth of the first call)."""
    rss = _rss_mb()
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    peak = _rss_mb() - rss
    walls, cpus = [], []
    for _ in range(REPEATS):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, first, statistics.median(walls), statistics.median(cpus), peak


def _orbits(n):
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(n, 4, generator=gen, dtype=torch.float64)
    lo, hi = ORBIT_SEMI_MAJOR
    a = lo + (hi - lo) * u[:, 0]
    e = ORBIT_MAX_ECCENTRICITY * u[:, 1]
    start = pericentre_states(a, e, 2 * math.pi * u[:, 2], torch.where(u[:, 3] < 0.5, -1.0, 1.0).double())
    # times uniform over one period, as central_potential_pairs draws them (after exactly one
    # period a symplectic integrator's energy error is back near zero: not a fair probe)
    t = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi * a**1.5
    return start, t


def _errors(start, end):
    i0, i1 = kepler_invariants(start), kepler_invariants(end)
    de = ((i1.energy - i0.energy).abs() / i0.energy.abs()).max().item()
    da = (i1.runge_lenz - i0.runge_lenz).norm(dim=1).max().item()
    return de, da


def _verlet(start, t, steps):
    """Second-order velocity Verlet, vectorised (the simplest symplectic integrator)."""
    dt = (t / steps).unsqueeze(1)
    q, v = start[:, :2].clone(), start[:, 2:].clone()

    def acc(q):
        r2 = (q * q).sum(1, keepdim=True)
        return -q / (r2 * r2.sqrt())

    a = acc(q)
    for _ in range(steps):
        v = v + 0.5 * dt * a
        q = q + dt * v
        a = acc(q)
        v = v + 0.5 * dt * a
    return torch.cat([q, v], 1)


def _scipy(start, period):
    out = []
    for s, p in zip(start.numpy(), period.numpy()):

        def rhs(_, u):
            r3 = (u[0] ** 2 + u[1] ** 2) ** 1.5
            return [u[2], u[3], -u[0] / r3, -u[1] / r3]

        sol = solve_ivp(rhs, (0, p), s, method="DOP853", rtol=1e-10, atol=1e-12)
        out.append(sol.y[:, -1])
    return torch.tensor(np.array(out))


def _floor(start):
    x, y = start[:, 0].clone(), start[:, 1].clone()
    for _ in range(3 * STEPS):
        inv = torch.addcmul(x * x, y, y).rsqrt_()
        inv3 = inv * inv
        inv3.mul_(inv)
        _ = x * inv3, y * inv3


def bench_kepler():
    start, period = _orbits(N_ORBITS)
    rows = []
    end, first, wall, cpu, peak = _measure(lambda: integrate_kepler(start, period, steps=STEPS))
    de, da = _errors(start, end)
    rows.append(["hessext integrate_kepler (4th order)", first, wall, cpu, peak, de, da])
    _, first, wall, cpu, peak = _measure(lambda: _floor(start))
    rows.append(["floor: 3x1500 force evaluations", first, wall, cpu, peak, float("nan"), float("nan")])
    sub, psub = start[:N_SCIPY], period[:N_SCIPY]
    end_s, first, wall, cpu, peak = _measure(lambda: _scipy(sub, psub))
    scale = N_ORBITS / N_SCIPY
    de_s, da_s = _errors(sub, end_s)
    rows.append(
        [
            f"scipy DOP853 per orbit (x{scale:.0f} from {N_SCIPY})",
            first * scale,
            wall * scale,
            cpu * scale,
            peak,
            de_s,
            da_s,
        ]
    )
    # velocity Verlet: step count for the same worst energy error (error ∝ dt²)
    probe = 4000
    end_v = _verlet(start[:500], period[:500], probe)
    de_v, _ = _errors(start[:500], end_v)
    steps_v = max(probe, int(probe * math.sqrt(de_v / max(de, 1e-300))))
    end_v, first, wall, cpu, peak = _measure(lambda: _verlet(start, period, steps_v))
    de_v, da_v = _errors(start, end_v)
    rows.append([f"torch velocity Verlet, {steps_v} steps", first, wall, cpu, peak, de_v, da_v])
    return rows


def bench_sparse():
    from sklearn.linear_model import LassoCV

    a, _, _ = lorentz_pairs(4000, seed=0)
    eb = (a[:, :3] * a[:, 3:]).sum(1)
    z = torch.tanh(0.3 * eb) + 0.01 * torch.randn(
        4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    names = ["E_x", "E_y", "E_z", "B_x", "B_y", "B_z"]
    expr, first, wall, cpu, peak = _measure(lambda: sparse_polynomial_fit(z, a, names, degree=2))
    rows = [
        ["hessext sparse_polynomial_fit (OMP path)", first, wall, cpu, peak, len(expr.coefficients), expr.r2]
    ]
    values, _ = monomials(a, names, degree=2)
    A = (values - values.mean(0)) / values.std(0)

    def lasso():
        return LassoCV(cv=5, random_state=0).fit(A, z.numpy())

    model, first, wall, cpu, peak = _measure(lasso)
    rows.append(
        [
            "scikit-learn LassoCV (5-fold)",
            first,
            wall,
            cpu,
            peak,
            int((model.coef_ != 0).sum()),
            model.score(A, z.numpy()),
        ]
    )
    return rows


def bench_twin():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.rand(128, 1, generator=gen) * 3 - 1.5
    y = torch.sin(3 * anchors[:, 0])
    x = torch.linspace(-2.5, 2.5, 1001).unsqueeze(1)
    model = TwinNet(1, seed=0)
    _, first, wall, cpu, peak = _measure(lambda: twin_predict(model, x, anchors, y))

    def loop():
        with torch.no_grad():
            vals = [model(x, a.expand(len(x), 1)) + yi for a, yi in zip(anchors, y)]
            vals += [yi - model(a.expand(len(x), 1), x) for a, yi in zip(anchors, y)]
            v = torch.stack(vals, 1)
            return v.mean(1), v.std(1, correction=0)

    rows = [["hessext twin_predict", first, wall, cpu, peak]]
    _, first, wall, cpu, peak = _measure(loop)
    rows.append(["Python loop over anchors", first, wall, cpu, peak])
    return rows


def _table(title, header, rows, ref=0):
    print(f"\n{title}")
    print(" | ".join(header + ["wall vs first row"]))
    for r in rows:
        cells = [r[0]] + [f"{v:.3g}" if isinstance(v, float) else str(v) for v in r[1:]]
        print(" | ".join(cells + [f"{r[2] / rows[ref][2]:.2f}x"]))


def main():
    torch.set_num_threads(int(os.environ.get("HESSEXT_BENCH_THREADS", "1")))
    print(f"threads {torch.get_num_threads()}, load {os.getloadavg()}, orbits {N_ORBITS}, repeats {REPEATS}")
    common = ["method", "first call s", "wall s", "CPU s", "peak MB"]
    _table(
        f"Kepler, {N_ORBITS} orbits to times within one period",
        common + ["max dE/E", "max |dA|"],
        bench_kepler(),
    )
    _table("Sparse regression, 4000 x 27 monomials", common + ["terms", "R²"], bench_sparse())
    _table("Twin prediction, 1001 points x 128 anchors", common, bench_twin())


def test_bench_invariants():
    main()


if __name__ == "__main__":
    main()
