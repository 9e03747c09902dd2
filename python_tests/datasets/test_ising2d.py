"""The Ising data set: Onsager's exact results, Monte Carlo against them away from T_c, the
measured autocorrelation time against a process with a known one, determinism, bad inputs."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from hessext.datasets import IsingSamples, ising
from hessext.datasets.ising2d import (
    T_C,
    WOLFF_SWITCH_TAU,
    energy_per_site,
    integrated_autocorrelation_time,
    magnetization_per_site,
    onsager_energy,
    onsager_magnetization,
)


def test_exact_results_at_known_points():
    assert T_C == pytest.approx(2.269185314213022, rel=1e-15)
    assert float(onsager_energy(T_C)) == pytest.approx(-math.sqrt(2), rel=1e-12)  # u(T_c) = -√2
    assert float(onsager_energy(0.05)) == pytest.approx(-2.0, abs=1e-12)  # ground state
    # high temperature: -βf = ln 2 + 2 ln cosh β + tanh⁴β + ..., so u = -2 tanh β (1 + O(β²))
    assert float(onsager_energy(100.0)) == pytest.approx(-2 * math.tanh(0.01), rel=1e-3)
    assert float(onsager_magnetization(0.5)) == pytest.approx(1.0, abs=1e-6)  # 1 - sinh⁻⁴(4)/8
    assert float(onsager_magnetization(T_C * (1 - 1e-9))) < 0.1  # M ~ (T_c - T)^(1/8)
    assert float(onsager_magnetization(T_C * 1.01)) == 0.0


def test_energy_is_the_derivative_of_the_free_energy():
    """u = d(βf)/dβ: check Onsager's u against a numerical derivative of his free energy
    -βf = ln(2 cosh 2β) + (1/2π) ∫_0^π ln[(1 + sqrt(1 - k² sin² θ))/2] dθ."""

    def minus_beta_f(b):
        k = 2 * math.sinh(2 * b) / math.cosh(2 * b) ** 2
        integral = quad(lambda t: math.log((1 + math.sqrt(1 - k * k * math.sin(t) ** 2)) / 2), 0, math.pi)[0]
        return math.log(2 * math.cosh(2 * b)) + integral / (2 * math.pi)

    for T in (1.5, 2.0, 3.0, 4.0):
        b, h = 1 / T, 1e-5
        u = -(minus_beta_f(b + h) - minus_beta_f(b - h)) / (2 * h)
        assert float(onsager_energy(T)) == pytest.approx(u, abs=1e-7)


def test_observables():
    s = torch.ones(2, 4, 4, dtype=torch.int8)
    s[1, 0, 0] = -1
    assert energy_per_site(s).tolist() == [-2.0, -(32 - 8) / 16]
    assert magnetization_per_site(s).tolist() == [1.0, 14 / 16]


def test_autocorrelation_time_of_an_ar1_process():
    """x_t = φ x_{t-1} + noise has ρ(t) = φ^t, τ_int = (1 + φ) / (2 (1 - φ)) exactly."""
    rng = np.random.default_rng(0)
    for phi in (0.0, 0.5, 0.8):
        x = np.zeros((16, 20000))
        noise = rng.standard_normal(x.shape)
        for t in range(1, x.shape[1]):
            x[:, t] = phi * x[:, t - 1] + noise[:, t]
        tau = (1 + phi) / (2 * (1 - phi))
        # the windowed estimator's relative error here is ~ sqrt(2 (2W + 1) / (C T)) < 2 %
        assert integrated_autocorrelation_time(x) == pytest.approx(tau, rel=0.06)
    assert integrated_autocorrelation_time(np.ones(50)) == 0.5


def _mean_se(x: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Mean and standard error from the means of independent chains (robust to leftover
    correlation within a chain)."""
    per_chain = np.array([x[groups == g].mean() for g in np.unique(groups)])
    return float(per_chain.mean()), float(per_chain.std(ddof=1) / math.sqrt(per_chain.size))


@pytest.mark.parametrize("algorithm", ["wolff", "metropolis"])
def test_monte_carlo_agrees_with_onsager_away_from_tc(algorithm):
    """L = 16 at T = 1.5, 2.0 (ordered) and 3.0 (disordered): ⟨e⟩ and ⟨|m|⟩ within 4.5 standard
    errors of the exact infinite-lattice values (finite-size corrections there are
    ~ exp(-L/ξ) with ξ <= 2, below 1e-3 of a standard error)."""
    temps = [1.5, 2.0, 3.0]
    n, chains = 1600, 16
    d = ising(16, temps, n, seed=7, algorithm=algorithm, n_chains=chains)
    chain = np.tile(np.arange(n) % chains, len(temps))  # sample k*chains + b comes from chain b
    for T in temps:
        m = d.temperature.numpy() == T
        e, se = _mean_se(d.energy.numpy()[m], chain[m])
        assert abs(e - float(onsager_energy(T))) < 4.5 * se, (T, e, float(onsager_energy(T)), se)
        if T < T_C:
            am, se = _mean_se(np.abs(d.magnetization.numpy()[m]), chain[m])
            assert abs(am - float(onsager_magnetization(T))) < 4.5 * se, (T, am, se)


def test_sampling_choices_are_measured_and_reported():
    d = ising(16, [1.2, T_C, 3.5], 64, seed=1)
    assert isinstance(d, IsingSamples) and len(d) == 3 * 64
    assert d.spins.dtype == torch.int8 and d.spins.shape == (192, 16, 16)
    assert set(d.spins.unique().tolist()) <= {-1, 1}
    assert torch.equal(d.energy, energy_per_site(d.spins))
    assert torch.equal(d.magnetization, magnetization_per_site(d.spins))
    assert d.temperature.tolist() == [1.2] * 64 + [T_C] * 64 + [3.5] * 64
    runs = {round(r.temperature, 3): r for r in d.runs}
    # near T_c Metropolis slows down (measured) and Wolff takes over; far from it, not
    assert runs[round(T_C, 3)].metropolis_tau > WOLFF_SWITCH_TAU and runs[round(T_C, 3)].algorithm == "wolff"
    assert runs[round(T_C, 3)].clusters_per_sweep >= 1
    for T in (1.2, 3.5):
        assert runs[T].algorithm == "metropolis" and runs[T].metropolis_tau < WOLFF_SWITCH_TAU
    for r in d.runs:
        assert r.decorrelation == max(1, math.ceil(2 * max(r.tau_abs_m, r.tau_energy)))
        assert r.thermalization >= 100
    metro = ising(16, [T_C], 16, seed=1, algorithm="metropolis")
    assert metro.runs[0].algorithm == "metropolis" and metro.runs[0].metropolis_tau is None


def test_deterministic_for_a_seed_and_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = ising(8, [1.5, 2.3], 40, seed=3)
        torch.set_num_threads(2)
        b = ising(8, [1.5, 2.3], 40, seed=3)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a.spins, b.spins)
    assert not torch.equal(a.spins, ising(8, [1.5, 2.3], 40, seed=4).spins)
    fixed = ising(8, [2.3], 8, seed=3, thermalization=10, decorrelation=3)
    assert fixed.runs[0].decorrelation == 3


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((1, [2.0], 10), {}, "L must be an int >= 2"),
        ((2.5, [2.0], 10), {}, "L must be"),
        ((8, [0.0], 10), {}, "temperatures must be > 0"),
        ((8, [-1.0, 2.0], 10), {}, "temperatures must be > 0"),
        ((8, [], 10), {}, "temperatures is empty"),
        ((8, [float("nan")], 10), {}, "finite"),
        ((8, [2.0], 0), {}, "n_per_temperature must be an int >= 1"),
        ((8, [2.0], 10), {"algorithm": "swendsen-wang"}, "algorithm"),
        ((8, [2.0], 10), {"seed": -1}, "seed"),
        ((8, [2.0], 10), {"decorrelation": 0}, "decorrelation"),
        ((8, [2.0], 10), {"thermalization": -5}, "thermalization"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ising(*args, **kwargs)
