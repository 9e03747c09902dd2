"""The invariants stage of ``hessext reproduce wetzel``: Siamese networks that find conserved
quantities and invariants, and twin-network regression (docs/wetzel-invariants.md).

Three tasks, each cached in the work folder under its own fingerprint (config and seed), so an
interrupted run resumes after the last finished task:

- ``siamese_central``: pairs of states on one Kepler orbit (hessext.datasets.central_potential_pairs);
  a Siamese net with a one-neuron latent; the latent regressed on the degree-2 monomials of
  (x, y, v_x, v_y). Expected: L_z = x v_y − y v_x.
- ``siamese_lorentz``: one field (E, B) seen from two frames (hessext.datasets.lorentz_pairs);
  one-neuron latent; degree-2 monomials of the six components. Expected: an invariant, E·B,
  E² − B² or a combination of the two.
- ``tnn``: a twin network against a plain network of the same widths and the same number of
  Adam steps on the 1-D problem of hessext.datasets.regression1d: RMSE inside the training
  interval, and the rank correlation of the anchor spread with the error on a test interval
  reaching outside it.

``run_invariants`` computes an :class:`InvariantsResults`; ``write_invariants`` adds its figures
and text to a report. The wetzel pipeline (hessext/apps/reproduce/wetzel.py) calls both.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from hessext.datasets import (
    central_potential_pairs,
    field_invariants,
    kepler_invariants,
    lorentz_pairs,
    regression_1d,
    regression_1d_function,
)
from hessext.datasets.regression1d import REGRESSION_1D_RANGE
from hessext.interpret import (
    siamese_accuracy,
    siamese_latent,
    sparse_polynomial_fit,
    train_siamese,
    train_twin,
    twin_predict,
)
from hessext.models import SiameseNet, TwinNet, mlp, num_parameters
from hessext.reporting.report import Report, pyplot
from hessext.reporting.workdir import WorkDir, fingerprint_of
from hessext.training import train

__all__ = [
    "SiameseConfig",
    "TwinConfig",
    "InvariantsConfig",
    "SiameseResult",
    "TwinResult",
    "InvariantsResults",
    "run_invariants",
    "write_invariants",
]

KEPLER_NAMES = ("x", "y", "v_x", "v_y")
FIELD_NAMES = ("E_x", "E_y", "E_z", "B_x", "B_y", "B_z")
LZ_TERMS = ("x*v_y", "y*v_x")
EB_TERMS = ("E_x*B_x", "E_y*B_y", "E_z*B_z")
E2B2_TERMS = ("E_x^2", "E_y^2", "E_z^2", "B_x^2", "B_y^2", "B_z^2")
# a named invariant is "recovered" when its monomials carry this share of the expression's
# standardised coefficients (and, for L_z, its two terms have opposite signs)
DOMINANCE = 0.9
TEST_OUTSIDE = (-2.5, 2.5)  # the twin comparison's test interval (training: REGRESSION_1D_RANGE)
FIGURE_POINTS = 1000
_SCHEMA = 1  # bump when the meaning of a cached piece changes


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class SiameseConfig:
    """One Siamese task: pairs for training and for the held-out test, the latent width, the
    encoder's hidden widths, the training schedule (epochs of one-cycle Adam), and (Kepler
    only) the integrator's steps per trajectory."""

    n_train: int
    n_test: int
    epochs: int
    latent: int = 1
    hidden: tuple[int, ...] = (64, 64)
    lr: float = 3e-3
    batch_size: int = 256
    integrator_steps: int = 1500


@dataclass(frozen=True)
class TwinConfig:
    """The twin-vs-plain comparison: n_train labelled points (noise σ), n_unlabelled points
    for the loop term (weight loop_weight), steps Adam steps of batch_size for both networks,
    over n_seeds seeds (data and initialisation)."""

    n_train: int = 128
    n_unlabelled: int = 128
    noise: float = 0.2
    steps: int = 3000
    lr: float = 1e-2
    batch_size: int = 128
    loop_weight: float = 0.1
    hidden: tuple[int, ...] = (64, 64)
    n_test: int = 1001
    n_seeds: int = 1


@dataclass(frozen=True)
class InvariantsConfig:
    """The three tasks' settings; ``quick()`` is the --quick protocol, ``full()`` the full one."""

    central: SiameseConfig
    lorentz: SiameseConfig
    twin: TwinConfig

    @classmethod
    def quick(cls) -> InvariantsConfig:
        return cls(
            central=SiameseConfig(n_train=20000, n_test=4000, epochs=40),
            lorentz=SiameseConfig(n_train=20000, n_test=4000, epochs=60),
            twin=TwinConfig(),
        )

    @classmethod
    def full(cls) -> InvariantsConfig:
        return cls(
            central=SiameseConfig(n_train=60000, n_test=10000, epochs=60),
            lorentz=SiameseConfig(n_train=60000, n_test=10000, epochs=80),
            twin=TwinConfig(n_seeds=5),
        )


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class SiameseResult:
    """One Siamese task. expression: the sparse polynomial of the latent (str), r2 its R² on
    the held-out pairs' first members; coefficients / importance: its terms (raw units /
    standardised); term_shares: the share of the importance carried by each named invariant's
    monomials; recovered: the invariant those shares name ("none" if none reaches DOMINANCE);
    invariant_r2: R² of a straight-line fit of the latent on each known invariant.
    latent / invariant: FIGURE_POINTS test points for the figure (invariant_label on the x
    axis)."""

    test_accuracy: float
    expression: str
    r2: float
    train_accuracy: float
    r2_all_terms: float
    coefficients: dict[str, float]
    importance: dict[str, float]
    term_shares: dict[str, float]
    recovered: str
    invariant_r2: dict[str, float]
    latent_dim: int
    n_parameters: int
    n_train: int
    n_test: int
    epochs: int
    final_loss: float
    seconds: float
    invariant_label: str = ""
    latent: list[float] = field(default_factory=list)
    invariant: list[float] = field(default_factory=list)


@dataclass
class TwinResult:
    """Twin network vs a plain network (same widths, same Adam steps and batch size).

    rmse / rmse_plain: against the noiseless f on n_test points evenly spread over the
    training interval; *_outside: the same on TEST_OUTSIDE, which reaches beyond it;
    uncertainty_error_spearman_outside: Spearman ρ between the anchor spread and |error| on
    TEST_OUTSIDE (the _inside one on the training interval). With n_seeds > 1 the headline
    numbers are means over seeds and the *_by_seed lists hold each. grid_*: the figure's
    curves on TEST_OUTSIDE for the first seed; train_x / train_y its training points."""

    rmse: float
    rmse_plain: float
    uncertainty_error_spearman_outside: float
    rmse_ratio: float
    rmse_outside: float
    rmse_plain_outside: float
    uncertainty_error_spearman_inside: float
    mean_loop_violation_inside: float
    mean_loop_violation_outside: float
    n_parameters: int
    n_parameters_plain: int
    n_train: int
    n_unlabelled: int
    noise: float
    steps: int
    loop_weight: float
    seconds: float
    training_range: tuple[float, float] = REGRESSION_1D_RANGE
    test_outside: tuple[float, float] = TEST_OUTSIDE
    rmse_by_seed: list[float] = field(default_factory=list)
    rmse_plain_by_seed: list[float] = field(default_factory=list)
    spearman_outside_by_seed: list[float] = field(default_factory=list)
    grid_x: list[float] = field(default_factory=list)
    grid_truth: list[float] = field(default_factory=list)
    grid_twin: list[float] = field(default_factory=list)
    grid_twin_std: list[float] = field(default_factory=list)
    grid_plain: list[float] = field(default_factory=list)
    train_x: list[float] = field(default_factory=list)
    train_y: list[float] = field(default_factory=list)


@dataclass
class InvariantsResults:
    """The stage's results: the two Siamese tasks and the twin comparison."""

    siamese_central: SiameseResult
    siamese_lorentz: SiameseResult
    tnn: TwinResult


# ---------------------------------------------------------------------------------------------
# the tasks


def _sub_seed(seed: int, name: str) -> int:
    """A seed for one random thing of the run, derived from the run's seed and its name."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def _line_r2(z: np.ndarray, q: np.ndarray) -> float:
    """R² of the least-squares line z ≈ α q + c (the squared Pearson correlation)."""
    if q.std() == 0 or z.std() == 0:
        return 0.0
    return float(np.corrcoef(z, q)[0, 1] ** 2)


def _shares(importance: dict[str, float], groups: dict[str, tuple[str, ...]]) -> dict[str, float]:
    total = sum(importance.values()) or 1.0
    return {name: sum(importance.get(m, 0.0) for m in terms) / total for name, terms in groups.items()}


def _siamese(cfg: SiameseConfig, seed: int, task: str, progress) -> dict:
    """Train one Siamese task; returns {"result": SiameseResult, "state": state_dict}."""
    t0 = time.perf_counter()
    make_pairs: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = lorentz_pairs
    names: tuple[str, ...] = FIELD_NAMES
    if task == "central":
        make_pairs = functools.partial(central_potential_pairs, steps=cfg.integrator_steps)
        names = KEPLER_NAMES
    a, b, same = make_pairs(cfg.n_train, seed=_sub_seed(seed, f"{task}-train"))
    ta, tb, tsame = make_pairs(cfg.n_test, seed=_sub_seed(seed, f"{task}-test"))
    model = SiameseNet(len(names), cfg.latent, cfg.hidden, seed=_sub_seed(seed, f"{task}-init"))
    history = train_siamese(
        model,
        a.float(),
        b.float(),
        same,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=_sub_seed(seed, f"{task}-order"),
        progress=progress,
    )
    test_acc = siamese_accuracy(model, ta.float(), tb.float(), tsame)
    train_acc = siamese_accuracy(model, a.float(), b.float(), same)
    # the latent of held-out states, regressed on their monomials (one neuron: the first)
    z = siamese_latent(model.encoder, ta.float())[:, 0].double()
    expr = sparse_polynomial_fit(z, ta, names, degree=2)
    if task == "central":
        inv = kepler_invariants(ta)
        known = {
            "L_z": inv.angular_momentum,
            "E": inv.energy,
            "|A|": inv.runge_lenz.norm(dim=1),
            "A_x": inv.runge_lenz[:, 0],
            "A_y": inv.runge_lenz[:, 1],
        }
        shares = _shares(expr.importance, {"L_z": LZ_TERMS})
        lz = [expr.coefficients.get(m, 0.0) for m in LZ_TERMS]
        recovered = "L_z" if shares["L_z"] >= DOMINANCE and lz[0] * lz[1] < 0 else "none"
        x_axis, label = inv.angular_momentum.numpy(), "L_z = x v_y − y v_x"
    else:
        eb, e2b2 = field_invariants(ta)
        known = {"E·B": eb, "E²−B²": e2b2}
        shares = _shares(expr.importance, {"E·B": EB_TERMS, "E²−B²": E2B2_TERMS})
        shares["both"] = shares["E·B"] + shares["E²−B²"]
        # the latent against the best combination of the two invariants (least squares)
        basis = np.stack([eb.numpy(), e2b2.numpy(), np.ones(len(eb))], axis=1)
        coef = np.linalg.lstsq(basis, z.numpy(), rcond=None)[0]
        combo = basis[:, :2] @ coef[:2]
        known_r2 = _line_r2(z.numpy(), combo)
        if shares["E·B"] >= DOMINANCE:
            recovered = "E·B"
        elif shares["E²−B²"] >= DOMINANCE:
            recovered = "E²−B²"
        elif shares["both"] >= DOMINANCE:
            recovered = "a·E·B + b·(E²−B²)"
        else:
            recovered = "none"
        x_axis = combo
        label = f"{coef[0]:.3g}·E·B {'-' if coef[1] < 0 else '+'} {abs(coef[1]):.3g}·(E²−B²)"
    invariant_r2 = {k: _line_r2(z.numpy(), v.numpy()) for k, v in known.items()}
    if task == "lorentz":
        invariant_r2["a·E·B + b·(E²−B²)"] = known_r2
    k = min(FIGURE_POINTS, len(z))
    result = SiameseResult(
        test_accuracy=test_acc,
        expression=str(expr),
        r2=expr.r2,
        train_accuracy=train_acc,
        r2_all_terms=expr.r2_all_terms,
        coefficients=expr.coefficients,
        importance=expr.importance,
        term_shares=shares,
        recovered=recovered,
        invariant_r2=invariant_r2,
        latent_dim=cfg.latent,
        n_parameters=num_parameters(model),
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        epochs=cfg.epochs,
        final_loss=float(np.mean(history[-50:])),
        seconds=time.perf_counter() - t0,
        invariant_label=label,
        latent=z[:k].tolist(),
        invariant=[float(v) for v in x_axis[:k]],
    )
    return {"result": result, "state": model.state_dict()}


def _rmse(pred: torch.Tensor, truth: torch.Tensor) -> float:
    return float((pred - truth).pow(2).mean().sqrt())


def _twin_one(cfg: TwinConfig, seed: int, progress) -> dict:
    """One seed of the twin-vs-plain comparison."""
    x, y = regression_1d(cfg.n_train, seed=_sub_seed(seed, "tnn-train"), noise=cfg.noise)
    unlabelled = None
    if cfg.n_unlabelled:
        unlabelled = regression_1d(cfg.n_unlabelled, seed=_sub_seed(seed, "tnn-unlabelled"), noise=0.0)[
            0
        ].float()
    x, y = x.float(), y.float()
    lo, hi = REGRESSION_1D_RANGE
    inside = torch.linspace(lo, hi, cfg.n_test).unsqueeze(1)
    outside = torch.linspace(*TEST_OUTSIDE, cfg.n_test).unsqueeze(1)
    init = _sub_seed(seed, "tnn-init")
    twin = TwinNet(1, cfg.hidden, seed=init)
    train_twin(
        twin,
        x,
        y,
        steps=cfg.steps,
        unlabelled=unlabelled,
        loop_weight=cfg.loop_weight,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=_sub_seed(seed, "tnn-batches"),
        progress=progress,
    )
    plain = mlp(1, *cfg.hidden, 1, seed=init, activation=nn.SiLU)
    # the same number of Adam steps of the same batch size and the same cosine schedule:
    # epochs over the n_train points
    epochs = max(1, round(cfg.steps / -(-cfg.n_train // cfg.batch_size)))
    train(
        plain,
        x,
        y.unsqueeze(1),
        epochs=epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=_sub_seed(seed, "plain-batches"),
        optimizer="adam",
        loss="mse",
        lr_schedule="cosine",
        progress=progress,
    )
    out: dict = {"n_parameters": num_parameters(twin), "n_parameters_plain": num_parameters(plain)}
    for name, grid in (("inside", inside), ("outside", outside)):
        truth = regression_1d_function(grid[:, 0])
        pred = twin_predict(twin, grid, x, y)
        with torch.no_grad():
            plain_pred = plain(grid)[:, 0]
        error = (pred.mean - truth).abs()
        rho = spearmanr(pred.std.numpy(), error.numpy()).statistic
        # loop violation over random triples (the test point and two anchors)
        gen = torch.Generator().manual_seed(_sub_seed(seed, f"loops-{name}"))
        j, k = torch.randint(0, len(x), (2, len(grid)), generator=gen)
        with torch.no_grad():
            loop = twin(grid, x[j]) + twin(x[j], x[k]) + twin(x[k], grid)
        out[name] = {
            "rmse": _rmse(pred.mean, truth),
            "rmse_plain": _rmse(plain_pred, truth),
            "spearman": float(rho),
            "loop": float(loop.abs().mean()),
            "truth": truth,
            "mean": pred.mean,
            "std": pred.std,
            "plain": plain_pred,
        }
    out["train_x"], out["train_y"] = x[:, 0], y
    out["grid_x"] = outside[:, 0]
    out["epochs_plain"] = epochs
    return out


def _twin(cfg: TwinConfig, seed: int, progress) -> TwinResult:
    t0 = time.perf_counter()
    runs = [
        _twin_one(cfg, seed if s == 0 else _sub_seed(seed, f"tnn-seed{s}"), progress)
        for s in range(cfg.n_seeds)
    ]
    mean = lambda key, part: float(np.mean([r[part][key] for r in runs]))
    first = runs[0]
    return TwinResult(
        rmse=mean("rmse", "inside"),
        rmse_plain=mean("rmse_plain", "inside"),
        uncertainty_error_spearman_outside=mean("spearman", "outside"),
        rmse_ratio=mean("rmse", "inside") / mean("rmse_plain", "inside"),
        rmse_outside=mean("rmse", "outside"),
        rmse_plain_outside=mean("rmse_plain", "outside"),
        uncertainty_error_spearman_inside=mean("spearman", "inside"),
        mean_loop_violation_inside=mean("loop", "inside"),
        mean_loop_violation_outside=mean("loop", "outside"),
        n_parameters=first["n_parameters"],
        n_parameters_plain=first["n_parameters_plain"],
        n_train=cfg.n_train,
        n_unlabelled=cfg.n_unlabelled,
        noise=cfg.noise,
        steps=cfg.steps,
        loop_weight=cfg.loop_weight,
        seconds=time.perf_counter() - t0,
        rmse_by_seed=[r["inside"]["rmse"] for r in runs],
        rmse_plain_by_seed=[r["inside"]["rmse_plain"] for r in runs],
        spearman_outside_by_seed=[r["outside"]["spearman"] for r in runs],
        grid_x=first["grid_x"].tolist(),
        grid_truth=first["outside"]["truth"].tolist(),
        grid_twin=first["outside"]["mean"].tolist(),
        grid_twin_std=first["outside"]["std"].tolist(),
        grid_plain=first["outside"]["plain"].tolist(),
        train_x=first["train_x"].tolist(),
        train_y=first["train_y"].tolist(),
    )


def run_invariants(
    wd: WorkDir, *, quick: bool, seed: int, progress, config: InvariantsConfig | None = None
) -> InvariantsResults:
    """The three tasks (module docstring) with the --quick or the full protocol (or an
    explicit ``config``), each taken from ``wd``'s cache when it was computed from the same
    settings and seed. ``progress``: None (bars on a terminal), True or False."""
    if config is None:
        config = InvariantsConfig.quick() if quick else InvariantsConfig.full()
    pieces: dict[str, SiameseResult] = {}
    for task, cfg in (("central", config.central), ("lorentz", config.lorentz)):
        fp = fingerprint_of("wetzel-invariants", _SCHEMA, f"siamese-{task}", dataclasses.asdict(cfg), seed)
        pieces[task] = wd.cached(
            f"invariants-siamese-{task}", fp, functools.partial(_siamese, cfg, seed, task, progress)
        )["result"]
    fp = fingerprint_of("wetzel-invariants", _SCHEMA, "tnn", dataclasses.asdict(config.twin), seed)
    tnn = wd.cached("invariants-tnn", fp, lambda: _twin(config.twin, seed, progress))
    return InvariantsResults(siamese_central=pieces["central"], siamese_lorentz=pieces["lorentz"], tnn=tnn)


# ---------------------------------------------------------------------------------------------
# the report


def _latent_figure(results: InvariantsResults):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (title, r) in zip(
        axes,
        (("Kepler orbits", results.siamese_central), ("Lorentz-related fields", results.siamese_lorentz)),
    ):
        ax.plot(r.invariant, r.latent, ".", ms=2, alpha=0.5)
        ax.set_xlabel(r.invariant_label)
        ax.set_ylabel("Siamese latent z")
        ax.set_title(f"{title}: test accuracy {100 * r.test_accuracy:.1f} %")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _twin_figure(t: TwinResult):
    plt = pyplot()
    x, mean, std = np.asarray(t.grid_x), np.asarray(t.grid_twin), np.asarray(t.grid_twin_std)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for a in (ax, ax2):
        a.axvspan(*t.training_range, color="0.92", label="training interval")
    ax.plot(t.train_x, t.train_y, ".", ms=3, color="0.4", label="training data")
    ax.plot(x, t.grid_truth, "k-", lw=1, label="f(x)")
    ax.plot(x, t.grid_plain, "--", color="tab:orange", label="plain network")
    ax.plot(x, mean, color="tab:blue", label="twin network (anchor mean)")
    ax.fill_between(x, mean - 2 * std, mean + 2 * std, color="tab:blue", alpha=0.2, label="± 2 anchor spread")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=7, loc="upper center")
    ax.set_title(f"RMSE inside: twin {t.rmse:.3f}, plain {t.rmse_plain:.3f}")
    ax2.semilogy(
        x, np.abs(mean - np.asarray(t.grid_truth)), color="tab:red", label="|error| of the twin network"
    )
    ax2.semilogy(x, std, color="tab:blue", label="anchor spread (uncertainty)")
    ax2.set_xlabel("x")
    ax2.legend(fontsize=7)
    ax2.set_title(
        f"Spearman(spread, |error|) on [{t.test_outside[0]}, {t.test_outside[1]}]: "
        f"{t.uncertainty_error_spearman_outside:.2f}"
    )
    fig.tight_layout()
    return fig


def _fmt_terms(r: SiameseResult, k: int = 6) -> str:
    return ", ".join(f"{m} {r.importance[m]:.3f}" for m in list(r.importance)[:k])


def write_invariants(rep: Report, results: InvariantsResults) -> None:
    """The stage's section of the report: the Siamese table, the recovered expressions, the
    latent-vs-invariant figure, and the twin-network comparison with its figure."""
    c, lz, t = results.siamese_central, results.siamese_lorentz, results.tnn
    rep.heading("Invariants and conserved quantities (Siamese networks)")
    rep.text(
        "A Siamese network maps both members of a pair through one encoder with a one-neuron "
        'latent z and calls the pair "same" when the latents are close. Positives are two '
        "states of one Kepler orbit (V = −1/r), or one electromagnetic field seen from two "
        "frames related by a boost and a rotation; negatives pair members of different "
        "positives. The latent of held-out states is then regressed on all monomials of degree "
        "≤ 2 of the inputs (orthogonal matching pursuit on standardised monomials, the "
        "shortest expression within 0.01 of the full fit's R²)."
    )
    rep.table(
        ["task", "train acc.", "test acc.", "R² (sparse)", "R² (all monomials)", "recovered", "seconds"],
        [
            [
                name,
                f"{100 * r.train_accuracy:.1f} %",
                f"{100 * r.test_accuracy:.1f} %",
                f"{r.r2:.4f}",
                f"{r.r2_all_terms:.4f}",
                r.recovered,
                f"{r.seconds:.0f}",
            ]
            for name, r in (("Kepler orbits", c), ("Lorentz fields", lz))
        ],
    )
    rep.text(
        f"Kepler: `{c.expression}`. Terms by standardised coefficient: {_fmt_terms(c)}. "
        f"R² of a straight line of z on each conserved quantity: "
        + ", ".join(f"{k} {v:.3f}" for k, v in c.invariant_r2.items())
        + ". The latent is the angular momentum, not the energy or the Runge–Lenz vector."
        if c.recovered == "L_z"
        else f"Kepler: `{c.expression}` (L_z not recovered; shares {c.term_shares})."
    )
    rep.text(
        f"Lorentz: `{lz.expression}`. Terms by standardised coefficient: {_fmt_terms(lz, 9)}. "
        f"Shares of the expression: E·B terms {lz.term_shares['E·B']:.2f}, E_i² and B_i² terms "
        f"{lz.term_shares['E²−B²']:.2f}. R² of z on the invariants: "
        + ", ".join(f"{k} {v:.3f}" for k, v in lz.invariant_r2.items())
        + ". A one-neuron latent may carry any function of the two invariants; it is read as "
        + f"{lz.recovered}."
    )
    rep.figure(
        _latent_figure(results),
        "siamese_latent",
        "The Siamese latent of held-out states against the invariant the regression names: "
        f"left, L_z for Kepler orbits; right, the least-squares combination {lz.invariant_label} "
        "of the field invariants.",
    )
    rep.heading("Twin neural network regression")
    rep.text(
        f"A twin network F(x₁, x₂) ≈ y₁ − y₂ trained on {t.n_train} noisy points "
        f"(σ = {t.noise}) of f(x) = sin(3x) + x²/2 on [{t.training_range[0]}, "
        f"{t.training_range[1]}], with the loop term F(a,b)+F(b,c)+F(c,a) = 0 (weight "
        f"{t.loop_weight}) over the training inputs and {t.n_unlabelled} unlabelled ones; its "
        "prediction is the mean over the training anchors of F(x, x_i) + y_i and "
        "y_i − F(x_i, x), the spread of those values its uncertainty. The plain network has the "
        f"same hidden widths and the same {t.steps} Adam steps ({t.n_parameters} vs "
        f"{t.n_parameters_plain} parameters: the twin's first layer sees two inputs)."
    )
    rep.table(
        ["", "twin", "plain"],
        [
            ["RMSE vs f, training interval", f"{t.rmse:.4f}", f"{t.rmse_plain:.4f}"],
            [f"RMSE vs f, {list(t.test_outside)}", f"{t.rmse_outside:.3f}", f"{t.rmse_plain_outside:.3f}"],
            [
                "Spearman(spread, abs. error), training interval",
                f"{t.uncertainty_error_spearman_inside:.3f}",
                "—",
            ],
            [
                f"Spearman(spread, abs. error), {list(t.test_outside)}",
                f"{t.uncertainty_error_spearman_outside:.3f}",
                "—",
            ],
            [
                "mean abs. loop violation, inside / outside",
                f"{t.mean_loop_violation_inside:.3g} / {t.mean_loop_violation_outside:.3g}",
                "—",
            ],
        ],
    )
    if len(t.rmse_by_seed) > 1:
        rep.text(
            f"Over {len(t.rmse_by_seed)} seeds: twin RMSE "
            + ", ".join(f"{v:.4f}" for v in t.rmse_by_seed)
            + "; plain "
            + ", ".join(f"{v:.4f}" for v in t.rmse_plain_by_seed)
            + "; Spearman outside "
            + ", ".join(f"{v:.2f}" for v in t.spearman_outside_by_seed)
            + "."
        )
    rep.figure(
        _twin_figure(t),
        "twin_regression",
        "Left: the twin network's prediction with ± 2 anchor spreads, the plain network and the "
        "truth; the grey band is the training interval. Right: the twin network's error and "
        "its anchor spread.",
    )
