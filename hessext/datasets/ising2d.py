"""The 2-D Ising model: Monte Carlo configurations and Onsager's exact results (docs/wetzel-ising.md).

H = -J Σ_⟨ij⟩ s_i s_j with J = 1, k_B = 1, on a periodic L×L lattice. Per site, for one
configuration: energy e = -(1/N) Σ_i s_i (s_right(i) + s_down(i)) (every bond once), signed
magnetisation m = (1/N) Σ_i s_i, N = L².

:func:`ising` samples configurations at given temperatures with the compiled sweeps
(:func:`hessext.ops.ising_sweeps`). Per temperature it runs independent chains from an ordered
start, measures the integrated autocorrelation time τ_int of |m| and e (Sokal's automatic
window) after thermalising, and keeps one configuration every ``decorrelation`` sweeps, by
default ⌈2 τ_int⌉ of the slower observable: samples that far apart are effectively
independent. With ``algorithm="wolff"`` (the default) each temperature first measures how
Metropolis decorrelates and switches to Wolff cluster updates where τ_int exceeds
:data:`WOLFF_SWITCH_TAU` sweeps — near T_c, where single-spin updates slow down critically —
and stays with Metropolis elsewhere; ``"metropolis"`` uses Metropolis everywhere. What was
chosen and measured is reported per temperature in :attr:`IsingSamples.runs`.

Exact results (infinite lattice; Onsager 1944, Yang 1952): T_c = 2/ln(1+√2);
u(T) = -coth(2β)[1 + (2/π)(2 tanh²(2β) - 1) K(k)], k = 2 sinh(2β)/cosh²(2β), K the complete
elliptic integral of the first kind of modulus k; M(T) = (1 - sinh⁻⁴(2β))^(1/8) below T_c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import ellipk

from hessext._internal.progress import progress_bar
from hessext.datasets._checks import finite_vector
from hessext.ops import ising_sweeps

__all__ = [
    "T_C",
    "WOLFF_SWITCH_TAU",
    "IsingSamples",
    "TemperatureRun",
    "ising",
    "energy_per_site",
    "magnetization_per_site",
    "integrated_autocorrelation_time",
    "onsager_energy",
    "onsager_magnetization",
]

T_C = 2.0 / math.log(1.0 + math.sqrt(2.0))
"""Onsager's critical temperature of the square-lattice Ising model, 2/ln(1+√2) ≈ 2.26919."""

WOLFF_SWITCH_TAU = 4.0
"""With ``algorithm="wolff"``: a temperature whose measured Metropolis τ_int (in sweeps) exceeds
this runs Wolff cluster updates instead."""

_PILOT_MIN = 200  # sweeps of a τ_int measurement, at least
_PILOT_PER_TAU = 50  # ... and at least this many τ_int long
_THERMALIZE_MIN = 100  # sweeps before the first measurement
_THERMALIZE_PER_TAU = 20  # automatic thermalisation: at least this many τ_int
_WINDOW_C = 6.0  # Sokal's window: the smallest W with W >= c τ(W)


# ----------------------------------------------------------------------------- exact results
def onsager_energy(T) -> np.ndarray:
    """Exact energy per site u(T) of the infinite lattice (J = 1); T: scalar or array > 0."""
    T = np.asarray(T, dtype=np.float64)
    b = 1.0 / T
    k2 = np.minimum((2.0 * np.sinh(2.0 * b) / np.cosh(2.0 * b) ** 2) ** 2, 1.0)
    # at T_c, k = 1: K diverges logarithmically while its factor 2 tanh²(2β) − 1 vanishes linearly
    with np.errstate(invalid="ignore", divide="ignore"):
        term = np.where(
            k2 < 1.0, (2.0 * np.tanh(2.0 * b) ** 2 - 1.0) * ellipk(k2), 0.0
        )  # ellipk takes m = k²
    return -(1.0 / np.tanh(2.0 * b)) * (1.0 + (2.0 / np.pi) * term)


def onsager_magnetization(T) -> np.ndarray:
    """Exact spontaneous magnetisation M(T) = (1 - sinh⁻⁴(2/T))^(1/8) below T_c, 0 above."""
    T = np.asarray(T, dtype=np.float64)
    x = 1.0 - np.sinh(2.0 / T) ** -4.0
    return np.where(T < T_C, np.clip(x, 0.0, None) ** 0.125, 0.0)


# ----------------------------------------------------------------------------- observables
def energy_per_site(spins: torch.Tensor) -> torch.Tensor:
    """e = -(1/N) Σ_i s_i (s_right + s_down) of configurations [n, L, L] → float64 [n]."""
    s = spins.to(torch.float64)
    bonds = s * (s.roll(-1, -1) + s.roll(-1, -2))
    return -bonds.mean(dim=(-1, -2))


def magnetization_per_site(spins: torch.Tensor) -> torch.Tensor:
    """Signed m = (1/N) Σ_i s_i of configurations [n, L, L] → float64 [n]."""
    return spins.to(torch.float64).mean(dim=(-1, -2))


def integrated_autocorrelation_time(series, c: float = _WINDOW_C) -> float:
    """τ_int = 1/2 + Σ_{t=1}^{W} ρ(t) of a time series [T] or of independent chains [C, T]
    (the autocorrelation ρ averaged over chains), with Sokal's automatic window: the smallest W
    with W >= c τ_int(W). Units: the series' steps. A series without fluctuations gives 1/2
    (every sample independent); a window that runs past T/2 gives the value there (a lower
    bound: the series was too short)."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(
            f"integrated_autocorrelation_time: series must be [T] or [C, T] with T >= 2, got {x.shape}"
        )
    x = x - x.mean()
    var = float((x * x).mean())
    if var <= 1e-300:
        return 0.5
    T = x.shape[1]
    n = 1 << (2 * T - 1).bit_length()
    f = np.fft.rfft(x, n=n, axis=1)
    acov = np.fft.irfft(f * np.conj(f), n=n, axis=1)[:, :T].mean(axis=0) / np.arange(T, 0, -1)
    rho = acov / acov[0]
    tau = 0.5
    for W in range(1, T // 2):
        tau += rho[W]
        if W >= c * tau:
            return float(tau)
    return float(tau)


# ----------------------------------------------------------------------------- sampling
@dataclass
class TemperatureRun:
    """How one temperature was sampled: the algorithm used, the τ_int of |m| and e measured with
    it (in its sweeps; a Wolff sweep is ``clusters_per_sweep`` cluster flips, ≈ 1/⟨m²⟩ so that
    one flips about L² spins; 0 for Metropolis), Metropolis's τ_int where it was measured to
    choose (``algorithm="wolff"``), the sweeps run before sampling and between samples."""

    temperature: float
    algorithm: str
    tau_abs_m: float
    tau_energy: float
    metropolis_tau: float | None
    clusters_per_sweep: int
    thermalization: int
    decorrelation: int
    n_chains: int


@dataclass
class IsingSamples:
    """Configurations of the 2-D Ising model. ``spins`` [n, L, L] int8 (±1); ``temperature``,
    ``energy`` (per site), ``magnetization`` (signed, per site): float64 [n], grouped by
    temperature in the order given, n_per_temperature each; ``runs``: one
    :class:`TemperatureRun` per temperature."""

    L: int
    spins: torch.Tensor
    temperature: torch.Tensor
    energy: torch.Tensor
    magnetization: torch.Tensor
    runs: list[TemperatureRun] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.spins.shape[0])

    def select(self, mask: torch.Tensor) -> IsingSamples:
        """The samples where ``mask`` [n] (bool) holds; ``runs`` are kept whole."""
        return IsingSamples(
            self.L,
            self.spins[mask],
            self.temperature[mask],
            self.energy[mask],
            self.magnetization[mask],
            self.runs,
        )


def _positive_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise ValueError(f"ising: {name} must be an int >= {low}, got {value!r}")
    return int(value)


def _chain_key(seed: int, L: int, index: int) -> int:
    """The Philox key of temperature ``index``'s chains: 63 bits from numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, L, index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class _Chains:
    """n chains at one temperature, advanced by the compiled sweeps, counting their sweeps."""

    def __init__(self, L: int, T: float, n: int, key: int):
        self.beta, self.key, self.sweeps, self.clusters = 1.0 / T, key, 0, 1
        gen = torch.Generator().manual_seed(key)
        signs = (torch.randint(0, 2, (n, 1, 1), generator=gen) * 2 - 1).to(torch.int8)
        self.spins = signs.expand(n, L, L).contiguous()  # ordered start, random sign per chain

    def _sweeps(self, n_sweeps: int, algorithm: str, observables: bool):
        out = ising_sweeps(
            self.spins,
            self.beta,
            n_sweeps,
            seed=self.key,
            algorithm=algorithm,
            sweep_offset=self.sweeps,
            clusters_per_sweep=self.clusters,
            observables=observables,
        )
        self.sweeps += n_sweeps
        return out

    def run(self, n_sweeps: int, algorithm: str) -> None:
        if n_sweeps:
            self.spins = self._sweeps(n_sweeps, algorithm, False)

    def measure(self, n_sweeps: int, algorithm: str) -> tuple[float, float, float]:
        """τ_int of |m| and e over the next n_sweeps sweeps (one measurement per sweep), and ⟨m²⟩."""
        self.spins, m, e = self._sweeps(n_sweeps, algorithm, True)
        tau_m = integrated_autocorrelation_time(m.abs().numpy())
        return tau_m, integrated_autocorrelation_time(e.numpy()), float(m.square().mean())


def ising(
    L: int,
    temperatures,
    n_per_temperature: int,
    *,
    seed: int = 0,
    algorithm: str = "wolff",
    thermalization: int | None = None,
    decorrelation: int | None = None,
    n_chains: int | None = None,
    progress: bool | None = None,
) -> IsingSamples:
    """Monte Carlo configurations of the periodic L×L Ising model (J = 1) at each temperature.

    L >= 2; temperatures: scalar or 1-D, each > 0; n_per_temperature >= 1 configurations each
    (n = len(temperatures) × n_per_temperature in all). algorithm: ``"wolff"`` (Wolff cluster
    updates where Metropolis's measured τ_int exceeds :data:`WOLFF_SWITCH_TAU` sweeps, i.e.
    near T_c; Metropolis elsewhere) or ``"metropolis"`` (everywhere). thermalization: sweeps
    of the chosen algorithm before τ_int is measured (default 100, then extended until the chain
    has run 20 τ_int; the measurements count); decorrelation: sweeps
    between kept configurations (default ⌈2 τ_int⌉, τ_int of the slower of |m| and e);
    n_chains: independent chains per temperature (default min(n_per_temperature, 16); they run
    in parallel). The result depends on the arguments only (not on the thread count)."""
    L = _positive_int(L, "L", 2)
    temps = finite_vector(temperatures, "temperatures", "ising")
    if temps.numel() == 0:
        raise ValueError("ising: temperatures is empty")
    if not bool((temps > 0).all()):
        raise ValueError(f"ising: temperatures must be > 0, got min {temps.min().item():.4g}")
    n_per = _positive_int(n_per_temperature, "n_per_temperature")
    if algorithm not in ("wolff", "metropolis"):
        raise ValueError(f"ising: algorithm must be 'wolff' or 'metropolis', got {algorithm!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"ising: seed must be an int >= 0, got {seed!r}")
    if thermalization is not None:
        thermalization = _positive_int(thermalization, "thermalization", 0)
    if decorrelation is not None:
        decorrelation = _positive_int(decorrelation, "decorrelation")
    chains = min(n_per, 16) if n_chains is None else _positive_int(n_chains, "n_chains")
    per_chain = -(-n_per // chains)

    spins, runs = [], []
    for index, T in enumerate(progress_bar(temps.tolist(), desc=f"Ising L={L}", progress=progress)):
        c = _Chains(L, T, chains, _chain_key(int(seed), L, index))
        chosen, metropolis_tau = algorithm, None
        if algorithm == "wolff":  # how slow would Metropolis be here?
            c.run(_THERMALIZE_MIN, "metropolis")
            tau_m, tau_e, m2 = c.measure(_PILOT_MIN, "metropolis")
            metropolis_tau = max(tau_m, tau_e)
            chosen = "wolff" if metropolis_tau > WOLFF_SWITCH_TAU else "metropolis"
            # a mean Wolff cluster holds N⟨m²⟩ spins: about 1/⟨m²⟩ clusters flip L² spins
            c.clusters = max(1, round(1.0 / max(m2, 1e-12)))
        c.run(_THERMALIZE_MIN if thermalization is None else thermalization, chosen)
        tau_m, tau_e, _ = c.measure(_PILOT_MIN, chosen)
        for _ in range(3):  # automatic: until the chain has run 20 τ_int (measurements count)
            tau = max(tau_m, tau_e)
            if thermalization is not None or c.sweeps >= _THERMALIZE_PER_TAU * tau:
                break
            c.run(math.ceil(_THERMALIZE_PER_TAU * tau) - c.sweeps, chosen)
            tau_m, tau_e, _ = c.measure(max(_PILOT_MIN, math.ceil(_PILOT_PER_TAU * tau)), chosen)
        gap = decorrelation if decorrelation is not None else max(1, math.ceil(2.0 * max(tau_m, tau_e)))
        clusters = c.clusters if chosen == "wolff" else 0
        runs.append(TemperatureRun(T, chosen, tau_m, tau_e, metropolis_tau, clusters, c.sweeps, gap, chains))
        kept = []
        for _ in range(per_chain):
            c.run(gap, chosen)
            kept.append(c.spins)
        # [per_chain, chains, L, L] → sample k of chain b at position k*chains + b; first n_per
        spins.append(torch.stack(kept).reshape(-1, L, L)[:n_per])
    all_spins = torch.cat(spins)
    return IsingSamples(
        L,
        all_spins,
        temps.repeat_interleave(n_per),
        energy_per_site(all_spins),
        magnetization_per_site(all_spins),
        runs,
    )
