"""``hessext reproduce wetzel``: Wetzel's interpretation programme end to end (docs/wetzel-ising.md).

Stages, each cached in the work folder under the fingerprint of its settings and seed, so an
interrupted run resumes after the last finished piece:

1. Monte Carlo: 2-D Ising configurations at every size L over a broad temperature scan
   (hessext.datasets.ising; Wolff near T_c, Metropolis elsewhere, decorrelation from the
   measured τ_int), checked against Onsager's exact energy and magnetisation.
2. Phase classifiers (a CNN and a dense net) trained on the scan's far ends, labelled by phase;
   their mean prediction crosses ½ at T*(L), extrapolated in 1/L.
3. Autoencoders with a one-number latent z on configurations at all temperatures, no labels.
   A first T_c guess (the crossing of z's Binder cumulant for the two largest L on the scan)
   centres a fine window, sampled again; the Binder cumulant of z there, fitted over every L
   to one scaling curve, gives T_c and ν with a bootstrap error: the estimate.
4. The correlation-probing network per receptive field (full lattice, 1×2, 1×1) on
   sign-symmetrised configurations, its loss table against ln 2, and the reading of the 1×2
   bottleneck against |m| and the energy (monotone fits, R² overall and within temperatures).
5. Influence functions (exact Hessian) of the CNN classifier's training configurations on its
   predictions at the estimated T_c.
6. The invariants stage (Siamese networks, twin regression: wetzel_invariants.py).

Everything is written from one typed :class:`WetzelResults` (DIR/report/results.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import curve_fit
from torch import nn

from hessext.apps.reproduce import wetzel_invariants as invariants_stage
from hessext.attribution import influence
from hessext.curvature import hessian
from hessext.datasets import ising
from hessext.datasets.ising2d import T_C, IsingSamples, onsager_energy, onsager_magnetization
from hessext.interpret import (
    BinderCollapse,
    binder_collapse,
    binder_cumulant,
    crossing,
    extrapolate_inverse_size,
    read_bottleneck,
)
from hessext.models import CorrelationProbe, IsingAutoencoder, PhaseCNN, PhaseMLP, spins_to_input
from hessext.reporting.report import Report, StageTimer, pyplot
from hessext.reporting.results import write_json
from hessext.reporting.workdir import WorkDir, fingerprint_of
from hessext.training import train

NAME = "wetzel"
HELP = (
    "Wetzel's interpretation programme: Ising phases and T_c, a correlation-probing bottleneck, "
    "autoencoders, influence at T_c, Siamese invariants and twin regression"
)
_SCHEMA = 2  # bump when the meaning of a cached piece changes


# ---------------------------------------------------------------------------------------------
# protocol


@dataclass(frozen=True)
class Protocol:
    """The settings of one run. sizes: the lattice sizes L; broad / n_broad: the scan's
    temperatures and configurations per temperature; window_half / window_step / n_window:
    the fine window around the first T_c guess; ordered_below / disordered_above: the phase
    labels of the classifiers' training data (the only prior about where T_c lies); probe_L,
    influence_L: the sizes of stages 4 and 5; n_bootstrap: resamples of the error bars."""

    sizes: tuple[int, ...]
    broad: tuple[float, ...]
    n_broad: int
    window_half: float
    window_step: float
    n_window: int
    classifier_epochs: int
    ae_epochs: int
    probe_epochs: int
    n_bootstrap: int
    ordered_below: float = 1.8
    disordered_above: float = 2.8
    ae_hidden: int = 16
    probe_L: int = 32
    probe_channels: int = 4
    influence_L: int = 16
    n_influence_test: int = 100

    @classmethod
    def quick(cls) -> Protocol:
        return cls(
            sizes=(8, 16, 32),
            broad=tuple(round(1.0 + 0.1 * k, 2) for k in range(27)),
            n_broad=300,
            window_half=0.15,
            window_step=0.025,
            n_window=2000,
            classifier_epochs=10,
            ae_epochs=20,
            probe_epochs=30,
            n_bootstrap=100,
        )

    @classmethod
    def full(cls) -> Protocol:
        return cls(
            sizes=(8, 12, 16, 24, 32, 48),
            broad=tuple(round(1.0 + 0.05 * k, 2) for k in range(53)),
            n_broad=1000,
            window_half=0.15,
            window_step=0.0125,
            n_window=6000,
            classifier_epochs=20,
            ae_epochs=40,
            probe_epochs=60,
            n_bootstrap=400,
        )


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class SamplingRow:
    """How one (L, T) was sampled (hessext.datasets.TemperatureRun, flattened)."""

    L: int
    temperature: float
    algorithm: str
    tau_abs_m: float
    tau_energy: float
    metropolis_tau: float | None
    clusters_per_sweep: int
    decorrelation: int


@dataclass
class OnsagerRow:
    """Monte Carlo against the exact infinite-lattice values at one (L, T) far from T_c: means
    and standard errors (over the decorrelated samples) and the deviations in standard errors."""

    L: int
    temperature: float
    energy: float
    energy_se: float
    energy_exact: float
    energy_z: float
    abs_m: float
    abs_m_se: float
    abs_m_exact: float | None
    abs_m_z: float | None


@dataclass
class ClassifierCurve:
    """One classifier at one L: mean P(ordered) per temperature and its ½ crossing ± bootstrap."""

    model: str
    L: int
    temperatures: list[float]
    mean_prediction: list[float]
    crossing: float
    crossing_error: float
    val_accuracy: float


@dataclass
class IsingResults:
    """The T_c estimate and the others beside it. tc_estimate ± tc_error: the finite-size
    collapse of the autoencoder latent's Binder cumulant over all L (tc_method); nu_estimate:
    the collapse's ν; binder_crossings: T where the Binder curves of successive sizes cross;
    classifier_extrapolation / ae_steepest_extrapolation: 1/L extrapolations of the classifier
    crossings and of the latent's steepest change; first_guess: the scan's crossing that
    centred the window."""

    tc_estimate: float
    tc_error: float
    tc_exact: float
    tc_relative_error: float
    tc_method: str
    nu_estimate: float
    nu_error: float
    collapse_points: int
    first_guess: float
    window: list[float]
    binder_crossings: dict[str, float]
    binder_crossing_errors: dict[str, float]
    classifier_curves: list[ClassifierCurve]
    classifier_extrapolation: dict[str, float]
    classifier_extrapolation_error: dict[str, float]
    ae_steepest: dict[str, float]
    ae_steepest_extrapolation: float
    reconstruction_steepest: dict[str, float]
    reconstruction_steepest_extrapolation: float
    sampling: list[SamplingRow]
    onsager: list[OnsagerRow]
    binder_curves: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class ProbeRow:
    """One row of the receptive-field table: losses (mean cross-entropy, ln 2 = a constant
    guess) on the training and held-out configurations; the quantity its bottleneck reads as."""

    receptive_field: str
    train_loss: float
    val_loss: float
    quantity: str | None = None
    r2_magnetization: float | None = None
    r2_energy: float | None = None


@dataclass
class CorrelationProbeResults:
    """Stage 4. table: one ProbeRow per receptive field and the ``baseline`` row;
    bottleneck_quantity / r2_by_quantity / r2_within_temperature: the reading of the 1×2
    bottleneck (monotone fits over all configurations; straight lines within each temperature);
    r2_bond_energy_along_field: the same for the bond energy along the 1×2 field only (what a
    1×2 field can compute exactly); fitted_map: the monotone map Q = f(quantity) (knots)."""

    L: int
    table: list[ProbeRow]
    bottleneck_quantity: str
    r2_by_quantity: dict[str, float]
    r2_within_temperature: dict[str, float]
    r2_bond_energy_along_field: float
    fitted_map: dict[str, list[float]]
    full_field_quantity: str
    full_field_r2: dict[str, float]


@dataclass
class AutoencoderResults:
    """Stage 3's latents: |corr(z, m)| at the largest L (autoencoder and VAE) and per L."""

    latent_abs_corr_m: float
    vae_latent_abs_corr_m: float
    latent_abs_corr_m_by_L: dict[str, float]
    vae_final_loss: float


@dataclass
class InfluenceResults:
    """Stage 5: influence (exact Hessian, damping δ) of the CNN classifier's training
    configurations on the loss of its own predictions at the temperature nearest the T_c
    estimate; mean influence per training temperature and the most helpful / harmful
    configurations (T, |m|, e, influence)."""

    L: int
    test_temperature: float
    n_train: int
    n_test: int
    n_parameters: int
    damping: float
    lambda_min: float
    lambda_max: float
    by_temperature: dict[str, float]
    most_helpful: list[dict[str, float]]
    most_harmful: list[dict[str, float]]
    corr_influence_abs_m_ordered: float
    corr_influence_abs_m_disordered: float


@dataclass
class StageTime:
    """Wall and CPU seconds of one stage."""

    stage: str
    wall_s: float
    cpu_s: float


@dataclass
class WetzelResults:
    """Everything results.json holds (the keys the issue lists, and the rest)."""

    quick: bool
    seed: int
    ising: IsingResults
    correlation_probe: CorrelationProbeResults
    autoencoder: AutoencoderResults
    influence: InfluenceResults
    siamese_central: invariants_stage.SiameseResult
    siamese_lorentz: invariants_stage.SiameseResult
    tnn: invariants_stage.TwinResult
    timings: list[StageTime]
    threads: int
    load_average: list[float]


# ---------------------------------------------------------------------------------------------
# helpers


def _sub_seed(seed: int, name: str) -> int:
    """A seed for one random thing of the run, from the run's seed and the thing's name."""
    return (
        int.from_bytes(hashlib.sha256(f"wetzel:{seed}:{name}".encode()).digest()[:4], "little") & 0x7FFFFFFF
    )


def _symmetrised(data: IsingSamples, seed: int) -> IsingSamples:
    """Each configuration times a random global sign (the Ising symmetry allows it)."""
    gen = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, (len(data),), generator=gen, dtype=torch.int8) * 2 - 1
    return IsingSamples(
        data.L,
        data.spins * sign.view(-1, 1, 1),
        data.temperature,
        data.energy,
        data.magnetization * sign.double(),
        data.runs,
    )


def _per_temperature(values: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Ts = np.unique(T)
    return Ts, np.array([values[T == t].mean() for t in Ts])


def _bootstrap(fn, groups: list[np.ndarray], n: int, seed: int) -> np.ndarray:
    """fn applied to n resamples (with replacement, within each group of indices)."""
    rng = np.random.default_rng(seed)
    return np.array(
        [fn(np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups])) for _ in range(n)]
    )


def _nanstd(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1)) if v.size > 1 else float("nan")


def _predict(model: nn.Module, x: torch.Tensor, batch: int = 2048) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [torch.softmax(model(x[i : i + batch]), 1)[:, 1] for i in range(0, len(x), batch)]
        ).numpy()


def _encode(ae: IsingAutoencoder, x: torch.Tensor, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    ae.eval()
    with torch.no_grad():
        z = torch.cat([ae.encode(x[i : i + batch]) for i in range(0, len(x), batch)])
        err = torch.cat([ae.reconstruction_error(x[i : i + batch]) for i in range(0, len(x), batch)])
    return z.numpy().astype(np.float64), err.numpy().astype(np.float64)


def _steepest(T: np.ndarray, y: np.ndarray, around: float) -> float:
    """Centre t of a fit y ≈ a + b tanh((T − t)/w) within ±0.5 of ``around`` (NaN if it fails)."""
    m = np.abs(T - around) <= 0.5
    Ts, ys = T[m], y[m]
    f = lambda t, a, b, c, w: a + b * np.tanh((t - c) / w)
    try:
        p, _ = curve_fit(f, Ts, ys, p0=[ys.mean(), (ys[-1] - ys[0]) / 2, around, 0.1], maxfev=20000)
    except (RuntimeError, ValueError):
        return float("nan")
    return float(p[2]) if abs(p[2] - around) <= 0.5 else float("nan")


# ---------------------------------------------------------------------------------------------
# stage 1: Monte Carlo


def _sample(wd: WorkDir, L: int, temps, n: int, seed: int, tag: str, progress) -> IsingSamples:
    temps = [round(float(t), 6) for t in temps]
    mc_seed = _sub_seed(seed, f"mc-{tag}-{L}")
    fp = fingerprint_of("wetzel", _SCHEMA, "mc", L, temps, n, mc_seed)
    raw = wd.cached(f"mc-{tag}-L{L}", fp, lambda: ising(L, temps, n, seed=mc_seed, progress=progress))
    return _symmetrised(raw, _sub_seed(seed, f"flip-{tag}-{L}"))


def _onsager_rows(data: IsingSamples, proto: Protocol) -> list[OnsagerRow]:
    rows = []
    T = data.temperature.numpy()
    for t in np.unique(T):
        if proto.ordered_below < t < proto.disordered_above:
            continue  # near T_c the finite-size corrections are not small
        m = T == t
        e, am = data.energy.numpy()[m], np.abs(data.magnetization.numpy()[m])
        se_e, se_m = e.std(ddof=1) / math.sqrt(e.size), am.std(ddof=1) / math.sqrt(am.size)
        u = float(onsager_energy(t))
        M = float(onsager_magnetization(t)) if t < proto.ordered_below + 1e-9 else None
        rows.append(
            OnsagerRow(
                data.L,
                float(t),
                float(e.mean()),
                float(se_e),
                u,
                float((e.mean() - u) / se_e) if se_e > 0 else 0.0,
                float(am.mean()),
                float(se_m),
                M,
                None if M is None else (float((am.mean() - M) / se_m) if se_m > 0 else 0.0),
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------
# stage 2: classifiers


def _train_classifiers(data: IsingSamples, proto: Protocol, seed: int, progress) -> dict:
    T = data.temperature
    far = (T <= proto.ordered_below) | (T >= proto.disordered_above)
    idx = torch.nonzero(far).squeeze(1)
    gen = torch.Generator().manual_seed(_sub_seed(seed, f"split-{data.L}"))
    idx = idx[torch.randperm(idx.numel(), generator=gen)]
    n_tr = int(0.8 * idx.numel())
    tr, va = idx[:n_tr], idx[n_tr:]
    x = spins_to_input(data.spins)
    y = (T <= proto.ordered_below).long()
    out: dict[str, object] = {"train_index": tr, "val_index": va}
    for name, make in (("cnn", lambda s: PhaseCNN(seed=s)), ("dense", lambda s: PhaseMLP(data.L, seed=s))):
        s = _sub_seed(seed, f"{name}-{data.L}")
        model = make(s)
        train(
            model,
            x[tr],
            y[tr],
            epochs=proto.classifier_epochs,
            lr=3e-3,
            batch_size=64,
            seed=s,
            optimizer="adam",
            progress=progress,
        )
        p_va = _predict(model, x[va])
        out[name] = {
            "state": model.state_dict(),
            "val_accuracy": float(((p_va > 0.5) == y[va].numpy().astype(bool)).mean()),
        }
    return out


def _classifier_curve(
    name: str,
    model: nn.Module,
    L: int,
    datas: list[IsingSamples],
    val_accuracy: float,
    proto: Protocol,
    seed: int,
) -> ClassifierCurve:
    p = np.concatenate([_predict(model, spins_to_input(d.spins)) for d in datas])
    T = np.concatenate([d.temperature.numpy() for d in datas])
    Ts, mean = _per_temperature(p, T)
    t_star = crossing(Ts, mean, level=0.5)
    groups = [np.nonzero(T == t)[0] for t in Ts]
    boot = _bootstrap(
        lambda ix: crossing(*_per_temperature(p[ix], T[ix]), level=0.5), groups, proto.n_bootstrap, seed
    )
    return ClassifierCurve(name, L, Ts.tolist(), mean.tolist(), t_star, _nanstd(boot), val_accuracy)


# ---------------------------------------------------------------------------------------------
# stage 3: autoencoders and T_c


def _train_autoencoder(data: IsingSamples, proto: Protocol, seed: int, variational: bool, progress) -> dict:
    s = _sub_seed(seed, f"{'vae' if variational else 'ae'}-{data.L}")
    ae = IsingAutoencoder(data.L, proto.ae_hidden, variational=variational, seed=s)
    x = spins_to_input(data.spins)
    if variational:
        loss = lambda model, xb, _yb: model.elbo_loss(xb)
        _, history = train(
            ae,
            x,
            x,
            epochs=proto.ae_epochs,
            lr=3e-3,
            batch_size=128,
            seed=s,
            optimizer="adam",
            loss=loss,
            progress=progress,
        )
    else:
        _, history = train(
            ae,
            x,
            x.flatten(1),
            epochs=proto.ae_epochs,
            lr=3e-3,
            batch_size=128,
            seed=s,
            optimizer="adam",
            loss="mse",
            progress=progress,
        )
    return {"state": ae.state_dict(), "history": history}


def _binder_table(
    z: dict[int, np.ndarray], T: dict[int, np.ndarray], index: dict[int, np.ndarray] | None = None
):
    """(L, T, U) rows of the Binder cumulant of z per size and temperature (optionally of the
    resampled indices)."""
    rows = []
    for L in sorted(z):
        zs, Ts = (z[L], T[L]) if index is None else (z[L][index[L]], T[L][index[L]])
        for t in np.unique(Ts):
            rows.append((L, t, binder_cumulant(zs[Ts == t])))
    return np.array(rows)


def _binder_crossings(tab: np.ndarray, sizes) -> dict[str, float]:
    out = {}
    for a, b in zip(sizes[:-1], sizes[1:]):
        A, B = tab[tab[:, 0] == a], tab[tab[:, 0] == b]
        out[f"{a}-{b}"] = crossing(A[:, 1], A[:, 2], y2=B[:, 2], direction="down")
    return out


# ---------------------------------------------------------------------------------------------
# stage 4: correlation probe


def _probe(data: IsingSamples, proto: Protocol, seed: int, progress) -> tuple[CorrelationProbeResults, dict]:
    L = data.L
    T = data.temperature
    far = (T <= proto.ordered_below) | (T >= proto.disordered_above)
    idx = torch.nonzero(far).squeeze(1)
    gen = torch.Generator().manual_seed(_sub_seed(seed, "probe-split"))
    idx = idx[torch.randperm(idx.numel(), generator=gen)]
    n_tr = int(0.8 * idx.numel())
    tr, va = idx[:n_tr], idx[n_tr:]
    x = spins_to_input(data.spins)
    y = (T <= proto.ordered_below).long()
    ce = nn.functional.cross_entropy
    rows, readings = [], {}
    candidates = {"magnetization": np.abs(data.magnetization.numpy()), "energy": data.energy.numpy()}
    s_f = data.spins.double()
    along = -(s_f * s_f.roll(-1, -1)).mean(dim=(1, 2)).numpy()  # bond energy along the 1×2 field
    groups = T.numpy()
    for rf in ((L, L), (1, 2), (1, 1)):
        s = _sub_seed(seed, f"probe-{rf[0]}x{rf[1]}")
        model = CorrelationProbe(L, rf, proto.probe_channels, seed=s)
        train(
            model,
            x[tr],
            y[tr],
            epochs=proto.probe_epochs,
            lr=1e-2,
            batch_size=64,
            seed=s,
            optimizer="adam",
            progress=progress,
        )
        model.eval()
        with torch.no_grad():
            tr_loss, va_loss = float(ce(model(x[tr]), y[tr])), float(ce(model(x[va]), y[va]))
            q = (
                torch.cat([model.bottleneck(x[i : i + 2048]) for i in range(0, len(x), 2048)])
                .double()
                .numpy()
            )
        reading = read_bottleneck(q, candidates, groups=groups)
        readings[rf] = (reading, q)
        name = "full" if rf == (L, L) else f"{rf[0]}x{rf[1]}"
        rows.append(
            ProbeRow(
                name, tr_loss, va_loss, reading.quantity, reading.r2["magnetization"], reading.r2["energy"]
            )
        )
    p0 = float(y[tr].double().mean())  # the best constant guess, from the training labels
    const = torch.log(torch.tensor([1 - p0, p0], dtype=torch.float64))
    base = lambda ix: float(ce(const.expand(len(ix), 2), y[ix]))
    rows.append(ProbeRow("baseline", base(tr), base(va)))
    reading, q = readings[(1, 2)]
    from_along = read_bottleneck(q, {"along": along})
    fit = reading.fits[reading.quantity]
    full = readings[(L, L)][0]
    return CorrelationProbeResults(
        L,
        rows,
        reading.quantity,
        reading.r2,
        reading.r2_within or {},
        from_along.r2["along"],
        {"x": fit.knots_x.tolist(), "q": fit.knots_q.tolist(), "increasing": [float(fit.increasing)]},
        full.quantity,
        full.r2,
    ), {rf: q for rf, (_, q) in readings.items()}


# ---------------------------------------------------------------------------------------------
# stage 5: influence at T_c


def _influence(
    model: nn.Module,
    train_data: IsingSamples,
    train_index: torch.Tensor,
    test: IsingSamples,
    t_test: float,
    proto: Protocol,
    progress,
) -> tuple[InfluenceResults, np.ndarray, np.ndarray]:
    x_tr = spins_to_input(train_data.spins[train_index], torch.float64)
    T_tr = train_data.temperature[train_index].numpy()
    y_tr = torch.as_tensor(T_tr <= proto.ordered_below).long()
    model = model.double()
    T = test.temperature.numpy()
    pick = np.nonzero(np.isclose(T, t_test))[0][: proto.n_influence_test]
    x_te = spins_to_input(test.spins[pick], torch.float64)
    with torch.no_grad():
        y_te = model(x_te).argmax(1)  # the model's own decisions at T_c
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    H = hessian(model, loss_fn, (x_tr, y_tr), progress=progress)
    lam = H.eigvalsh()
    lam_min, lam_max = float(lam[0]), float(lam[-1])
    damping = max(1e-3 * lam_max, 2.0 * max(0.0, -lam_min))
    scores = influence(
        model, loss_fn, (x_tr, y_tr), (x_te, y_te), hessian=H, damping=damping, progress=progress
    )
    per_train = scores.mean(1).numpy()
    am = np.abs(train_data.magnetization.numpy()[train_index.numpy()])
    e = train_data.energy.numpy()[train_index.numpy()]
    by_T = {f"{t:g}": float(per_train[T_tr == t].mean()) for t in np.unique(T_tr)}
    order = np.argsort(per_train)

    def describe(k):
        return {
            "temperature": float(T_tr[k]),
            "abs_m": float(am[k]),
            "energy": float(e[k]),
            "influence": float(per_train[k]),
        }

    ordered = T_tr <= proto.ordered_below
    return (
        InfluenceResults(
            train_data.L,
            float(t_test),
            int(len(y_tr)),
            int(len(pick)),
            int(sum(p.numel() for p in model.parameters())),
            float(damping),
            lam_min,
            lam_max,
            by_T,
            [describe(k) for k in order[::-1][:5]],
            [describe(k) for k in order[:5]],
            float(np.corrcoef(per_train[ordered], am[ordered])[0, 1]),
            float(np.corrcoef(per_train[~ordered], am[~ordered])[0, 1]),
        ),
        per_train,
        T_tr,
    )


# ---------------------------------------------------------------------------------------------
# the run


@contextlib.contextmanager
def _timed(timer: StageTimer, rows: list[StageTime], name: str):
    cpu0 = time.process_time()
    with timer.stage(name):
        yield
    rows.append(StageTime(name, timer.timings[name], time.process_time() - cpu0))


def _cached_model(wd: WorkDir, key: str, parts, compute):
    return wd.cached(key, fingerprint_of("wetzel", _SCHEMA, key, *parts), compute)


def _collapse_with_errors(z: dict, T: dict, sizes, tc0: float, n_boot: int, seed: int):
    tab = _binder_table(z, T)
    try:
        fit = binder_collapse(tab[:, 0], tab[:, 1], tab[:, 2], tc0=tc0)
    except ValueError:  # too few points near tc0 to fit: reported as NaN, not guessed
        fit = BinderCollapse(float("nan"), float("nan"), np.zeros(0), 0, float("nan"))
        cross = _binder_crossings(tab, sizes)
        return tab, fit, float("nan"), float("nan"), cross, {k: float("nan") for k in cross}
    cross = _binder_crossings(tab, sizes)
    rng = np.random.default_rng(seed)
    groups = {L: [np.nonzero(T[L] == t)[0] for t in np.unique(T[L])] for L in sizes}
    tcs, nus, crosses = [], [], []
    for _ in range(n_boot):
        index = {L: np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups[L]]) for L in sizes}
        bt = _binder_table(z, T, index)
        try:
            b = binder_collapse(bt[:, 0], bt[:, 1], bt[:, 2], tc0=fit.tc, nu0=fit.nu)
            tcs.append(b.tc)
            nus.append(b.nu)
        except ValueError:
            pass
        crosses.append(_binder_crossings(bt, sizes))
    cross_err = {k: _nanstd([c[k] for c in crosses]) for k in cross}
    return tab, fit, _nanstd(tcs), _nanstd(nus), cross, cross_err


def compute(
    wd: WorkDir,
    proto: Protocol,
    seed: int,
    progress,
    timer: StageTimer,
    clock: list[StageTime],
    invariants: invariants_stage.InvariantsConfig | None = None,
):
    """Every stage of the pipeline (module docstring); returns the results and what the figures
    need beyond them. invariants: the invariants stage's settings (default: its --quick
    protocol with ``proto == Protocol.quick()``, else its full one)."""
    sizes, Lmax = proto.sizes, proto.sizes[-1]
    extra: dict = {}
    with _timed(timer, clock, "Monte Carlo: broad scan"):
        broad = {L: _sample(wd, L, proto.broad, proto.n_broad, seed, "broad", progress) for L in sizes}
    with _timed(timer, clock, "phase classifiers"):
        classifiers = {
            L: _cached_model(
                wd,
                f"classifiers-L{L}",
                (dataclasses.asdict(proto), L, seed),
                lambda L=L: _train_classifiers(broad[L], proto, seed, progress),
            )
            for L in sizes
        }
    with _timed(timer, clock, "autoencoders"):
        aes = {
            L: _cached_model(
                wd,
                f"ae-L{L}",
                (dataclasses.asdict(proto), L, seed),
                lambda L=L: _train_autoencoder(broad[L], proto, seed, False, progress),
            )
            for L in sizes
        }
        vae = _cached_model(
            wd,
            f"vae-L{Lmax}",
            (dataclasses.asdict(proto), Lmax, seed),
            lambda: _train_autoencoder(broad[Lmax], proto, seed, True, progress),
        )
        models = {}
        for L in sizes:
            ae = IsingAutoencoder(L, proto.ae_hidden)
            ae.load_state_dict(aes[L]["state"])
            models[L] = ae
        zb = {L: _encode(models[L], spins_to_input(broad[L].spins)) for L in sizes}
        # first guess: where the largest system's ⟨|z|⟩ falls most steeply (low noise, a
        # little above T_c), looked for around the middle of the gap the labels leave open
        Ts, mz = _per_temperature(np.abs(zb[Lmax][0]), broad[Lmax].temperature.numpy())
        middle = 0.5 * (proto.ordered_below + proto.disordered_above)
        t0 = _steepest(Ts, mz / mz.max(), middle)
        if not math.isfinite(t0):  # no steep change found (an untrained latent): the gap's middle
            t0 = middle
    with _timed(timer, clock, "Monte Carlo: window around the first guess"):
        # the window follows the estimate once if it lands far from the window's centre
        first_guess = t0
        for _ in range(2):
            n_half = round(proto.window_half / proto.window_step)
            window_temps = [round(t0 + proto.window_step * k, 4) for k in range(-n_half, n_half + 1)]
            window = {
                L: _sample(wd, L, window_temps, proto.n_window, seed, "window", progress) for L in sizes
            }
            zw = {L: _encode(models[L], spins_to_input(window[L].spins)) for L in sizes}
            Tw = {L: window[L].temperature.numpy() for L in sizes}
            tab = _binder_table({L: zw[L][0] for L in sizes}, Tw)
            crossings = [c for c in _binder_crossings(tab, sizes).values() if np.isfinite(c)]
            t1 = float(np.median(crossings)) if crossings else t0
            if abs(t1 - t0) <= 0.5 * proto.window_half:
                break
            t0 = t1
    with _timed(timer, clock, "T_c: Binder collapse of the latent"):
        tab, fit, tc_err, nu_err, cross, cross_err = _collapse_with_errors(
            {L: zw[L][0] for L in sizes}, Tw, sizes, t1, proto.n_bootstrap, _sub_seed(seed, "boot-binder")
        )
        # the classifiers' crossings and the latent's steepest change, beside it
        curves = []
        for L in sizes:
            for name, make in (("cnn", lambda: PhaseCNN()), ("dense", lambda L=L: PhaseMLP(L))):
                model = make()
                model.load_state_dict(classifiers[L][name]["state"])
                curves.append(
                    _classifier_curve(
                        name,
                        model,
                        L,
                        [broad[L], window[L]],
                        classifiers[L][name]["val_accuracy"],
                        proto,
                        _sub_seed(seed, f"boot-{name}-{L}"),
                    )
                )
        extrap, extrap_err = {}, {}
        for name in ("cnn", "dense"):
            cs = [c for c in curves if c.model == name]
            ex = extrapolate_inverse_size(
                [c.L for c in cs], [c.crossing for c in cs], [c.crossing_error for c in cs]
            )
            extrap[name], extrap_err[name] = ex.tc, ex.tc_error
        steep, recon_steep = {}, {}
        for L in sizes:
            T_all = np.concatenate([broad[L].temperature.numpy(), Tw[L]])
            z_all = np.abs(np.concatenate([zb[L][0], zw[L][0]]))
            err_all = np.concatenate([zb[L][1], zw[L][1]])
            Ts, mz = _per_temperature(z_all, T_all)
            steep[str(L)] = _steepest(Ts, mz / mz.max(), t0)
            Ts, me = _per_temperature(err_all, T_all)
            recon_steep[str(L)] = _steepest(Ts, me, t0)
        ae_ex = extrapolate_inverse_size(list(sizes), [steep[str(L)] for L in sizes]).tc
        rec_ex = extrapolate_inverse_size(list(sizes), [recon_steep[str(L)] for L in sizes]).tc
    sampling = [
        SamplingRow(
            L,
            r.temperature,
            r.algorithm,
            r.tau_abs_m,
            r.tau_energy,
            r.metropolis_tau,
            r.clusters_per_sweep,
            r.decorrelation,
        )
        for L in sizes
        for d in (broad[L], window[L])
        for r in d.runs
    ]
    ising_results = IsingResults(
        tc_estimate=fit.tc,
        tc_error=tc_err,
        tc_exact=T_C,
        tc_relative_error=(fit.tc - T_C) / T_C,
        tc_method=(
            "finite-size-scaling collapse U(T, L) = g((T - T_c) L^(1/nu)) of the Binder cumulant of the "
            f"autoencoder latent over L = {', '.join(map(str, sizes))} (T_c, nu free; bootstrap error)"
        ),
        nu_estimate=fit.nu,
        nu_error=nu_err,
        collapse_points=fit.n_points,
        first_guess=first_guess,
        window=window_temps,
        binder_crossings=cross,
        binder_crossing_errors=cross_err,
        classifier_curves=curves,
        classifier_extrapolation=extrap,
        classifier_extrapolation_error=extrap_err,
        ae_steepest=steep,
        ae_steepest_extrapolation=ae_ex,
        reconstruction_steepest=recon_steep,
        reconstruction_steepest_extrapolation=rec_ex,
        sampling=sampling,
        onsager=[row for L in sizes for row in _onsager_rows(broad[L], proto)],
        binder_curves={f"{int(L)}": [] for L in sizes},
    )
    ising_results.binder_curves = {str(L): tab[tab[:, 0] == L][:, 2].tolist() for L in sizes}
    ising_results.binder_curves["T"] = tab[tab[:, 0] == sizes[0]][:, 1].tolist()
    # autoencoder summary
    vae_model = IsingAutoencoder(Lmax, proto.ae_hidden, variational=True)
    vae_model.load_state_dict(vae["state"])
    zv, _ = _encode(vae_model, spins_to_input(broad[Lmax].spins))
    corr = {str(L): abs(float(np.corrcoef(zb[L][0], broad[L].magnetization.numpy())[0, 1])) for L in sizes}
    ae_results = AutoencoderResults(
        corr[str(Lmax)],
        abs(float(np.corrcoef(zv, broad[Lmax].magnetization.numpy())[0, 1])),
        corr,
        float(vae["history"][-1]),
    )
    with _timed(timer, clock, "correlation probe"):
        key = "probe"
        fp = fingerprint_of("wetzel", _SCHEMA, key, dataclasses.asdict(proto), seed)
        probe_results, probe_q = wd.cached(
            key, fp, lambda: _probe(broad[proto.probe_L], proto, seed, progress)
        )
    with _timed(timer, clock, "influence at T_c"):
        Li = proto.influence_L
        t_test = min(window_temps, key=lambda t: abs(t - fit.tc))
        cnn = PhaseCNN()
        cnn.load_state_dict(classifiers[Li]["cnn"]["state"])
        key = "influence"
        fp = fingerprint_of("wetzel", _SCHEMA, key, dataclasses.asdict(proto), seed, t_test)
        infl, per_train, T_tr = wd.cached(
            key,
            fp,
            lambda: _influence(
                cnn, broad[Li], classifiers[Li]["train_index"], window[Li], t_test, proto, progress
            ),
        )
    with _timed(timer, clock, "invariants: Siamese networks and twin regression"):
        inv = invariants_stage.run_invariants(
            wd, quick=proto == Protocol.quick(), seed=seed, progress=progress, config=invariants
        )
    extra.update(
        broad=broad,
        window=window,
        zb=zb,
        zw=zw,
        zv=zv,
        vae_L=Lmax,
        tab=tab,
        fit=fit,
        probe_q=probe_q,
        per_train=per_train,
        T_tr=T_tr,
        invariants=inv,
    )
    results = WetzelResults(
        quick=proto == Protocol.quick(),
        seed=seed,
        ising=ising_results,
        correlation_probe=probe_results,
        autoencoder=ae_results,
        influence=infl,
        siamese_central=inv.siamese_central,
        siamese_lorentz=inv.siamese_lorentz,
        tnn=inv.tnn,
        timings=clock,
        threads=torch.get_num_threads(),
        load_average=list(os.getloadavg()),
    )
    return results, extra


# ---------------------------------------------------------------------------------------------
# the report


def _pct(x: float) -> str:
    return f"{100 * x:+.2f} %"


def _figure_classifiers(r: IsingResults):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, name in zip(axes, ("cnn", "dense")):
        for c in (c for c in r.classifier_curves if c.model == name):
            (line,) = ax.plot(
                c.temperatures, c.mean_prediction, ".-", ms=3, label=f"L = {c.L}: T* = {c.crossing:.3f}"
            )
            ax.axvline(c.crossing, color=line.get_color(), lw=0.6, ls=":")
        ax.axvline(r.tc_exact, color="k", lw=1, ls="--", label=f"exact T_c = {r.tc_exact:.4f}")
        ax.axhline(0.5, color="0.6", lw=0.6)
        ax.set_xlabel("T")
        ax.set_title(
            f"{'CNN' if name == 'cnn' else 'dense net'}: 1/L extrapolation "
            f"{r.classifier_extrapolation[name]:.3f}"
        )
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean P(ordered)")
    fig.tight_layout()
    return fig


def _figure_binder(r: IsingResults, tab: np.ndarray, sizes):
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for L in sizes:
        rows = tab[tab[:, 0] == L]
        ax.plot(rows[:, 1], rows[:, 2], "o-", ms=3, label=f"L = {L}")
        x = (rows[:, 1] - r.tc_estimate) * L ** (1.0 / r.nu_estimate)
        ax2.plot(x, rows[:, 2], "o", ms=3, label=f"L = {L}")
    ax.axvspan(r.tc_estimate - r.tc_error, r.tc_estimate + r.tc_error, color="tab:red", alpha=0.2)
    ax.axvline(r.tc_estimate, color="tab:red", lw=1, label=f"estimate {r.tc_estimate:.4f} ± {r.tc_error:.4f}")
    ax.axvline(r.tc_exact, color="k", lw=1, ls="--", label="exact")
    ax.set_xlabel("T")
    ax.set_ylabel("Binder cumulant of the latent z")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax2.set_xlabel("(T − T_c) L^(1/ν)")
    ax2.set_title(f"collapse: T_c = {r.tc_estimate:.4f}, ν = {r.nu_estimate:.3f}")
    ax2.set_xlim(-4, 4)
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _figure_probe(p: CorrelationProbeResults, data: IsingSamples, q: np.ndarray):
    plt = pyplot()
    T = data.temperature.numpy()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, (name, x) in zip(
        axes, (("magnetization", np.abs(data.magnetization.numpy())), ("energy", data.energy.numpy()))
    ):
        sc = ax.scatter(x, q, c=T, s=2, cmap="coolwarm", rasterized=True)
        if name == p.bottleneck_quantity:
            ax.plot(p.fitted_map["x"], p.fitted_map["q"], "k-", lw=1, label="monotone fit")
            ax.legend(fontsize=7)
        label = "|m|" if name == "magnetization" else "energy per site e"
        ax.set_xlabel(label)
        ax.set_title(
            f"R² = {p.r2_by_quantity[name]:.4f} (within T: "
            f"{p.r2_within_temperature.get(name, float('nan')):.3f})"
        )
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("1×2 bottleneck Q(S)")
    fig.colorbar(sc, ax=axes, label="T")
    return fig


def _figure_autoencoder(extra: dict, r: IsingResults, a: AutoencoderResults, sizes):
    plt = pyplot()
    L = extra["vae_L"]
    data = extra["broad"][L]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    T = data.temperature.numpy()
    sc = axes[0].scatter(
        data.magnetization.numpy(), extra["zb"][L][0], c=T, s=2, cmap="coolwarm", rasterized=True
    )
    axes[0].set_xlabel("m")
    axes[0].set_ylabel("latent z")
    axes[0].set_title(f"autoencoder, L = {L}: |corr(z, m)| = {a.latent_abs_corr_m:.4f}")
    fig.colorbar(sc, ax=axes[0], label="T")
    for Ls in sizes:
        Tb = np.concatenate([extra["broad"][Ls].temperature.numpy(), extra["window"][Ls].temperature.numpy()])
        z = np.abs(np.concatenate([extra["zb"][Ls][0], extra["zw"][Ls][0]]))
        err = np.concatenate([extra["zb"][Ls][1], extra["zw"][Ls][1]])
        Ts, mz = _per_temperature(z, Tb)
        axes[1].plot(Ts, mz / mz.max(), ".-", ms=2, label=f"L = {Ls}: steepest {r.ae_steepest[str(Ls)]:.3f}")
        Ts, me = _per_temperature(err, Tb)
        axes[2].plot(Ts, me, ".-", ms=2, label=f"L = {Ls}: steepest {r.reconstruction_steepest[str(Ls)]:.3f}")
    for ax, ylabel in ((axes[1], "⟨|z|⟩ (scaled to 1)"), (axes[2], "reconstruction MSE")):
        ax.axvline(r.tc_exact, color="k", lw=1, ls="--")
        ax.set_xlabel("T")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _figure_influence(i: InfluenceResults, per_train: np.ndarray, T_tr: np.ndarray):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    Ts = np.unique(T_tr)
    ax.boxplot([per_train[T_tr == t] for t in Ts], positions=Ts, widths=0.08, showfliers=False)
    ax.plot(Ts, [per_train[T_tr == t].mean() for t in Ts], "o-", color="tab:red", ms=3, label="mean")
    ax.axhline(0, color="0.5", lw=0.6)
    ax.set_xlabel("temperature of the training configuration")
    ax.set_ylabel("mean influence on the predictions at T_c")
    ax.set_title(f"CNN, L = {i.L}: test configurations at T = {i.test_temperature:.3f}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _figure_sampling(r: IsingResults, sizes):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for L in sizes:
        rows = sorted((s for s in r.sampling if s.L == L), key=lambda s: s.temperature)
        t = [s.temperature for s in rows]
        tau = [max(s.tau_abs_m, s.tau_energy) for s in rows]
        (line,) = ax.plot(t, tau, "-", lw=0.8, label=f"L = {L}")
        for s, y in zip(rows, tau):
            ax.plot(s.temperature, y, "o" if s.algorithm == "wolff" else ".", color=line.get_color(), ms=3)
    ax.set_xlabel("T")
    ax.set_ylabel("τ_int (sweeps of the algorithm used)")
    ax.set_title("measured autocorrelation (o: Wolff, ·: Metropolis)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_report(rep: Report, res: WetzelResults, extra: dict, proto: Protocol) -> None:
    """The report: text, tables and figures, all from ``res`` (and the samples in ``extra``)."""
    r, p, a, i = res.ising, res.correlation_probe, res.autoencoder, res.influence
    sizes = proto.sizes
    rep.text(
        f"Protocol: {'--quick' if res.quick else 'full'}, seed {res.seed}, sizes L = "
        f"{', '.join(map(str, sizes))}, {res.threads} threads. Everything below is recomputed by "
        "`hessext reproduce wetzel`; docs/wetzel-ising.md explains the methods."
    )
    rep.heading("T_c of the 2-D Ising model")
    rep.text(
        f"**Estimate: T_c = {r.tc_estimate:.4f} ± {r.tc_error:.4f}** (exact 2/ln(1+√2) = {r.tc_exact:.4f}, "
        f"deviation {_pct(r.tc_relative_error)}), from the {r.tc_method}; ν = {r.nu_estimate:.3f} ± "
        f"{r.nu_error:.3f} (exact 1), {r.collapse_points} points. The window "
        f"[{r.window[0]:.3f}, {r.window[-1]:.3f}] was centred on the scan's first guess {r.first_guess:.3f}; "
        "the exact value enters nothing but this comparison."
    )
    rows = [
        [
            "Binder collapse of the autoencoder latent (the estimate)",
            f"{r.tc_estimate:.4f} ± {r.tc_error:.4f}",
            _pct(r.tc_relative_error),
        ]
    ]
    for k, v in r.binder_crossings.items():
        rows.append(
            [
                f"Binder crossing of L = {k.replace('-', ' and ')}",
                f"{v:.4f} ± {r.binder_crossing_errors[k]:.4f}",
                _pct((v - T_C) / T_C),
            ]
        )
    for name in ("cnn", "dense"):
        for c in (c for c in r.classifier_curves if c.model == name):
            rows.append(
                [
                    f"{name} classifier, ½ crossing at L = {c.L}",
                    f"{c.crossing:.4f} ± {c.crossing_error:.4f}",
                    _pct((c.crossing - T_C) / T_C),
                ]
            )
        v, e = r.classifier_extrapolation[name], r.classifier_extrapolation_error[name]
        rows.append([f"{name} classifier, 1/L extrapolation", f"{v:.4f} ± {e:.4f}", _pct((v - T_C) / T_C)])
    rows.append(
        [
            "latent ⟨|z|⟩ steepest change, 1/L extrapolation",
            f"{r.ae_steepest_extrapolation:.4f}",
            _pct((r.ae_steepest_extrapolation - T_C) / T_C),
        ]
    )
    rows.append(
        [
            "reconstruction loss steepest change, 1/L extrapolation",
            f"{r.reconstruction_steepest_extrapolation:.4f}",
            _pct((r.reconstruction_steepest_extrapolation - T_C) / T_C),
        ]
    )
    rep.table(["method", "T_c", "vs exact"], rows)
    rep.figure(
        _figure_binder(r, extra["tab"], sizes),
        "binder",
        "Binder cumulant U = 1 − ⟨z⁴⟩/(3⟨z²⟩²) of the autoencoder latent z in the window, per L, and its "
        "finite-size-scaling collapse.",
    )
    rep.figure(
        _figure_classifiers(r),
        "classifiers",
        f"Mean prediction P(ordered) of the classifiers trained at T ≤ {proto.ordered_below} (ordered) and "
        f"T ≥ {proto.disordered_above} (disordered), per L; dotted: their ½ crossings.",
    )

    rep.heading("Monte Carlo data")
    worst_e = max(abs(o.energy_z) for o in r.onsager)
    worst_m = max(abs(o.abs_m_z) for o in r.onsager if o.abs_m_z is not None)
    rep.text(
        f"Against Onsager's exact energy and Yang's spontaneous magnetisation at the {len(r.onsager)} (L, T) "
        f"far from T_c: the largest deviation is {worst_e:.2f} standard errors in the energy and "
        f"{worst_m:.2f} "
        "in ⟨|m|⟩. Each temperature measured Metropolis's τ_int and ran Wolff clusters where it exceeded "
        "4 sweeps; samples are ⌈2 τ_int⌉ sweeps apart."
    )
    rep.table(
        ["L", "T", "algorithm", "τ_int(|m|)", "τ_int(e)", "sweeps apart"],
        [
            [
                s.L,
                f"{s.temperature:.3f}",
                s.algorithm + (f" ({s.clusters_per_sweep} clusters/sweep)" if s.algorithm == "wolff" else ""),
                f"{s.tau_abs_m:.2f}",
                f"{s.tau_energy:.2f}",
                s.decorrelation,
            ]
            for s in r.sampling
            if abs(s.temperature - r.tc_estimate) < 0.03 or s.temperature in (1.0, 3.6)
        ],
    )
    rep.figure(
        _figure_sampling(r, sizes),
        "autocorrelation",
        "Integrated autocorrelation time measured at every (L, T), in sweeps of the algorithm chosen there.",
    )

    rep.heading("Correlation-probing network (receptive field → average → one bottleneck neuron)")
    rep.table(
        ["receptive field", "train loss", "val loss", "bottleneck reads as", "R² |m|", "R² energy"],
        [
            [
                row.receptive_field,
                f"{row.train_loss:.4g}",
                f"{row.val_loss:.4g}",
                row.quantity or "",
                "" if row.r2_magnetization is None else f"{row.r2_magnetization:.4f}",
                "" if row.r2_energy is None else f"{row.r2_energy:.4f}",
            ]
            for row in p.table
        ],
    )
    rep.text(
        f"L = {p.L}, sign-symmetrised configurations. The 1×2 bottleneck is a monotone function of the "
        f"**{p.bottleneck_quantity}**: R² = {p.r2_by_quantity[p.bottleneck_quantity]:.4f} against "
        f"{', '.join(f'{k} {v:.4f}' for k, v in p.r2_by_quantity.items() if k != p.bottleneck_quantity)}; "
        f"within one temperature (where |m| and e no longer move together) a straight line explains "
        f"{', '.join(f'{k} {v:.3f}' for k, v in p.r2_within_temperature.items())} of its variance. "
        f"Against the bond energy along the field alone (all a 1×2 field can see): R² = "
        f"{p.r2_bond_energy_along_field:.4f}. The full-field net's bottleneck reads as "
        f"{p.full_field_quantity}."
    )
    rep.figure(
        _figure_probe(p, extra["broad"][p.L], extra["probe_q"][(1, 2)]),
        "bottleneck",
        "The 1×2 net's bottleneck Q(S) against |m| and the energy per site, coloured by temperature; the "
        "line is the fitted monotone map.",
    )

    rep.heading("Autoencoders")
    rep.text(
        f"One-number latent, trained on all temperatures without labels. |corr(z, m)| = "
        f"{a.latent_abs_corr_m:.4f} at L = {extra['vae_L']} (per L: "
        f"{', '.join(f'{k}: {v:.4f}' for k, v in a.latent_abs_corr_m_by_L.items())}); the variational "
        f"autoencoder's mean latent: {a.vae_latent_abs_corr_m:.4f}. The latent and the reconstruction "
        f"loss change most steeply at T*(L) (table above), which approaches T_c as L grows."
    )
    rep.figure(
        _figure_autoencoder(extra, r, a, sizes),
        "autoencoder",
        "Left: the latent against the signed magnetisation. Middle, right: ⟨|z|⟩ and the reconstruction "
        "loss against T per L; dashed: exact T_c.",
    )

    rep.heading("Influence of training configurations on the prediction at T_c")
    rep.text(
        f"The CNN classifier at L = {i.L} (P = {i.n_parameters}) is an ordinary nn.Module, so "
        f"hessext.influence applies: the exact Hessian of its mean training loss over the {i.n_train} "
        f"training configurations (λ from {i.lambda_min:.3g} to {i.lambda_max:.3g}, damping δ = "
        f"{i.damping:.3g}), "
        f"the test loss of its own decisions on {i.n_test} configurations at T = {i.test_temperature:.3f}. "
        f"Correlation of the influence with |m|: {i.corr_influence_abs_m_ordered:+.2f} among the ordered "
        f"training configurations, {i.corr_influence_abs_m_disordered:+.2f} among the disordered ones."
    )
    rep.table(
        ["", "T", "|m|", "e", "influence"],
        [
            [
                kind,
                f"{d['temperature']:.2f}",
                f"{d['abs_m']:.3f}",
                f"{d['energy']:.3f}",
                f"{d['influence']:.3g}",
            ]
            for kind, lst in (("most helpful", i.most_helpful), ("most harmful", i.most_harmful))
            for d in lst
        ],
    )
    rep.figure(
        _figure_influence(i, extra["per_train"], extra["T_tr"]),
        "influence",
        "Influence of each training configuration on the loss of the CNN's predictions at T_c (positive: "
        "removing it would raise that loss), by its temperature.",
    )

    invariants_stage.write_invariants(rep, extra["invariants"])

    rep.heading("Time")
    rep.table(
        ["stage", "wall s", "CPU s"],
        [[t.stage, f"{t.wall_s:.1f}", f"{t.cpu_s:.1f}"] for t in res.timings]
        + [
            ["total", f"{sum(t.wall_s for t in res.timings):.1f}", f"{sum(t.cpu_s for t in res.timings):.1f}"]
        ],
    )
    rep.text(
        f"Load average at the end: {', '.join(f'{x:.1f}' for x in res.load_average)} ({os.cpu_count()} CPUs)."
    )


def add_arguments(parser) -> None:
    """No options beyond the common ones (--quick, --out, --seed, --threads, --no-progress)."""


def run(args):
    """``hessext reproduce wetzel``: claim the work folder, compute (resuming from its cache),
    write DIR/report. Returns the report folder."""
    quick, seed = bool(args.quick), int(args.seed)
    progress = False if args.no_progress else None
    wd = WorkDir(args.out, NAME)
    proto = Protocol.quick() if quick else Protocol.full()
    timer = StageTimer(9)
    clock: list[StageTime] = []
    with wd.report("hessext reproduce wetzel: interpreting networks trained on physics data") as rep:
        res, extra = compute(wd, proto, seed, progress, timer, clock)
        write_report(rep, res, extra, proto)
        write_json(rep.tmp / "results.json", res)
        return rep.finish()
