"""``hessext reproduce toolbox``: the notebook of Dawid et al., "Hessian-based toolbox for
reliable and interpretable machine learning in physics" (Mach. Learn.: Sci. Technol. 3, 015002,
2022), as one command (docs/toolbox-paper.md).

On the built-in LL/CDW-I generator (hessext/datasets/fermions.py, the paper's V1/J grids): train
the 1-D CNN with the paper's recipe (full-batch SGD with momentum, a decreasing learning rate,
L2 λ = 0.05 as (λ/2n)‖θ‖²; or ``--checkpoint`` a state dict), its exact Hessian and spectrum, the
most helpful and harmful training examples of every test point (influence and RelatIF) with
the phase-diagram figure of where they lie, RUE per test point, and the local-ensemble
extrapolation score at the thresholds t = 1, 0.1, 0.01, 0.001 with true and predicted labels.

``--reference DIR`` runs the same on the original's stored model, Hessian and data (the folder
of the original repository, or hessext's copy of it) and prints the agreement of the 400
extrapolation scores with the published ones. The original's training CSV is not public in that
folder; when it is absent the training set (needed by influence and RUE) is regenerated on the
paper's grid and normalised with the reference's min and max, and the report says so.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hessext._version import __version__
from hessext.apps.analysis import choose_settings
from hessext.attribution import influence, most_harmful, most_helpful, relatif
from hessext.curvature import Hessian, hessian
from hessext.datasets import fermions
from hessext.models import Conv1DToolbox
from hessext.regularizers import L2
from hessext.reporting import figures
from hessext.reporting.report import StageTimer, UserError, pyplot
from hessext.reporting.results import write_json
from hessext.reporting.workdir import WorkDir, fingerprint_of
from hessext.training import train
from hessext.uncertainty import extrapolation_score, rue

NAME = "toolbox"
HELP = (
    "the Hessian-based toolbox notebook (Dawid et al. 2022) on LL/CDW-I: Hessian, influence, "
    "RelatIF, RUE, extrapolation scores"
)

THRESHOLDS = ("1", "0.1", "0.01", "0.001")
VERSIONS = {"true": "truever", "predicted": "minver"}
LAMBDA = 0.05
N_TRAIN = 1000
PAPER_BOOTSTRAP = 50
REFERENCE_MODEL = "Conv1D_original_l005_12site.pt"
REFERENCE_HESSIAN = "Conv1D_original_l005_12site_hessian.npy"

# The paper's numbers (docs/toolbox-paper.md; its notebook's outputs and the stored Hessian).
PAPER: dict[str, Any] = {
    "test_accuracy": 0.88,
    "misclassified": [21, 22, 23, 24, 25, 26],
    "lambda_top": [68.603, 0.5504, 0.2243, 0.1869, 0.1839],
    "lambda_min": -0.1820,
    "n_negative": 99,
    "trace": 70.70,
    "n_removed": {"1": 2, "0.1": 12, "0.01": 51, "0.001": 99},
    "damping_influence": 0.2,
    "damping_rue": 1.2,
    "test16_influence_helpful": [496, 497, 498, 499, 500],
    "test16_influence_harmful": [501, 502, 503, 504, 505],
    "test16_relatif_helpful": [332, 333, 334, 335, 336],
    "test0_influence_max_min_sum": [1.110e-4, -9.286e-4, 4.103e-2],
    "test21_influence_max_min_sum": [2.478e-2, -2.850e-3, -0.3618],
    "published_rue_true_test0_test21": [1.93e-5, 9.22e-2],
    "extrapolation_true_t1_tests_0_21_40": [0.079444, 0.71610, 0.19783],
}


@dataclass(frozen=True)
class Config:
    """The protocol (--quick: fewer training epochs, fewer bootstrap models)."""

    quick: bool
    seed: int
    epochs: int = 600
    lr: float = 0.05
    final_lr: float = 0.002
    momentum: float = 0.9
    n_bootstrap: int = 50
    top_k: int = 5

    @classmethod
    def make(cls, quick: bool, seed: int) -> Config:
        """The full protocol, or the reduced one when ``quick``."""
        return cls(quick=quick, seed=seed, epochs=400 if quick else 600, n_bootstrap=20 if quick else 50)


# ---- results ---------------------------------------------------------------------------------


@dataclass
class SpectrumResults:
    """The exact training-loss Hessian's spectrum: n_negative counts every λ < 0 (as the paper
    counted), n_negative_significant those below −1e-6·max|λ| (the rest is rounding)."""

    n_params: int
    lambda_top: list[float]
    lambda_min: float
    n_negative: int
    n_negative_significant: int
    n_abs_below_1e4: int
    trace: float
    source: str


@dataclass
class InfluenceResults:
    """Per test point the top_k most helpful / harmful training indices (V1 order; their V1/J
    in *_v1) for influence and RelatIF, and the max / min / sum of each test point's influence."""

    damping: float
    helpful: list[list[int]]
    harmful: list[list[int]]
    relatif_helpful: list[list[int]]
    relatif_harmful: list[list[int]]
    helpful_v1: list[list[float]]
    harmful_v1: list[list[float]]
    relatif_helpful_v1: list[list[float]]
    relatif_harmful_v1: list[list[float]]
    influence_max: list[float]
    influence_min: list[float]
    influence_sum: list[float]


@dataclass
class RUEResults:
    """RUE per test point: the variance over B bootstrap models (one Newton step each) of the
    test loss with the true label ('true'), with each model's own prediction ('minimal': the
    toolbox's two versions, all B rows kept: its published values kept only the first), and of
    the class probabilities ('prediction', Schulam & Saria's, summed over classes).
    published_formula: what the original code returned, (B−1)/B²·L(x)² with its B = 50 and L the
    true-label loss of the trained model (it kept one bootstrap row: docs/toolbox-paper.md)."""

    damping: float
    n_bootstrap: int
    true: list[float]
    minimal: list[float]
    prediction: list[float]
    published_formula: list[float]


@dataclass
class ExtrapolationResults:
    """Scores per threshold t and version ('true': true-label loss gradient, 'predicted': the
    predicted label's), the number of removed eigen-directions per t, and with --reference the
    published scores and the largest relative difference over all n_compared of them."""

    n_removed: dict[str, int]
    scores: dict[str, dict[str, list[float]]]
    published: dict[str, dict[str, list[float]]] | None = None
    max_rel_err_vs_published: float | None = None
    n_compared: int | None = None


@dataclass
class ToolboxResults:
    """Everything ``hessext reproduce toolbox`` measured (results.json)."""

    config: dict
    source: str
    training_data: str
    test_v1: list[float]
    test_labels: list[int]
    test_predictions: list[int]
    test_accuracy: float
    misclassified: list[int]
    spectrum: SpectrumResults
    influence: InfluenceResults
    rue: RUEResults
    extrapolation: ExtrapolationResults
    timings_s: dict[str, float]
    cpu_s: dict[str, float]
    paper: dict = field(default_factory=lambda: PAPER)
    version: str = __version__


# ---- inputs: generated or the reference ---------------------------------------------------------


@dataclass
class Problem:
    """What the toolbox runs on: model, splits (x, y), their V1/J, the Hessian (None: compute)."""

    model: nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    train_v1: np.ndarray
    test_v1: np.ndarray
    hessian: Hessian | None
    source: str
    training_data: str
    published: dict[str, dict[str, np.ndarray]] | None


def _regularizer() -> L2:
    return L2.from_weight_decay(LAMBDA, N_TRAIN)


def train_toolbox_cnn(cfg: Config, x, y, *, progress) -> nn.Module:
    """The paper's recipe: full-batch SGD with momentum, a learning rate decreasing
    geometrically from lr to final_lr, L2 (λ/2n)‖θ‖² as weight decay λ/n, dropout 0.5 on."""
    model = Conv1DToolbox(seed=cfg.seed)
    train(
        model,
        x,
        y,
        epochs=cfg.epochs,
        lr=cfg.lr,
        final_lr=cfg.final_lr,
        momentum=cfg.momentum,
        batch_size=len(y),
        seed=cfg.seed,
        weight_decay=LAMBDA / N_TRAIN,
        progress=progress,
    )
    return model.eval()


def _load_state(path, what: str) -> nn.Module:
    model = Conv1DToolbox()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the user's file
        raise UserError(f"{what} {path}: not a Conv1DToolbox state dict ({type(e).__name__}: {e})") from None
    return model.eval()


def generated_problem(cfg: Config, work: WorkDir, checkpoint, *, progress) -> Problem:
    """The built-in data (cached) and the CNN trained on it (cached), or the given checkpoint."""
    # a bad checkpoint is the user's error: found before the data are generated
    model = _load_state(checkpoint, "--checkpoint") if checkpoint is not None else None
    splits = work.cached("data", fingerprint_of("toolbox-data", __version__), fermions.make_toolbox_splits)
    if model is not None:
        how = f"checkpoint {Path(checkpoint).name}"
    else:
        key = fingerprint_of("toolbox-cnn", __version__, dataclasses.asdict(cfg) | {"n_bootstrap": None})
        state = work.cached(
            "cnn", key, lambda: train_toolbox_cnn(cfg, *splits.train, progress=progress).state_dict()
        )
        model = Conv1DToolbox()
        model.load_state_dict(state)
        model.eval()
        how = "trained here"
    return Problem(
        model,
        splits.train,
        splits.test,
        splits.V1["train"],
        splits.V1["test"],
        None,
        f"generated LL/CDW-I data, model {how}",
        "generated (1000 rows, the paper's grid)",
        None,
    )


def load_published(directory) -> dict[str, dict[str, np.ndarray]] | None:
    """The published extrapolation scores LEES_t{t}_{truever,minver}.txt, {version: {t: [50]}};
    None when the files are absent."""
    out: dict[str, dict[str, np.ndarray]] = {v: {} for v in VERSIONS}
    for version, suffix in VERSIONS.items():
        for t in THRESHOLDS:
            path = fermions.reference_file(directory, f"LEES_t{t}_{suffix}.txt")
            if path is None:
                return None
            out[version][t] = np.loadtxt(path)
    return out


def reference_problem(directory) -> Problem:
    """The original's stored model, Hessian and data from ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"--reference {directory}: not a folder")
    paths = {n: fermions.reference_file(directory, n) for n in (REFERENCE_MODEL, REFERENCE_HESSIAN)}
    missing = [n for n, p in paths.items() if p is None]
    if missing:
        raise UserError(f"--reference {directory}: {', '.join(missing)} not found (nor under model/)")
    try:
        ref = fermions.load_reference_data(directory)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"--reference {directory}: {e}") from None
    model = _load_state(paths[REFERENCE_MODEL], "--reference")
    H = Hessian.from_matrix(
        paths[REFERENCE_HESSIAN], n=N_TRAIN, description="the original toolbox's stored Hessian"
    )
    grids = fermions.toolbox_grids()
    if ref.train is not None:
        train_set, how = ref.train, "the original's training CSV"
    else:
        # the original's 1000 rows are not in the folder: regenerate them on the paper's grid,
        # normalised with the reference's min and max (deep in CDW-I the generator's exact,
        # translation-invariant ground states differ from the stored rows: docs/toolbox-paper.md)
        gen = fermions.make_ll_cdw(grids["train"] * fermions.PAPER_V1_SCALE, v1_critical=2.0)
        train_set = (fermions.minmax_normalise(gen.x, ref.lo, ref.hi)[0], gen.y)
        how = "regenerated on the paper's grid (the original's training CSV is not in the folder)"
    return Problem(
        model,
        train_set,
        ref.test,
        grids["train"],
        grids["test"],
        H,
        f"reference {directory}",
        how,
        load_published(directory),
    )


# ---- the toolbox -------------------------------------------------------------------------------


def spectrum_of(H: Hessian, source: str) -> SpectrumResults:
    """Top eigenvalues, λ_min, counts and trace of H."""
    lam = H.eigvalsh()
    top = lam.flip(0)[:5]
    scale = float(lam.abs().max())
    return SpectrumResults(
        n_params=int(lam.numel()),
        lambda_top=top.tolist(),
        lambda_min=float(lam.min()),
        n_negative=int((lam < 0).sum()),
        n_negative_significant=int((lam < -1e-6 * scale).sum()),
        n_abs_below_1e4=int((lam.abs() < 1e-4).sum()),
        trace=float(lam.sum()),
        source=source,
    )


def influence_study(prob: Problem, H, damping: float, k: int, *, progress) -> InfluenceResults:
    """Influence and RelatIF of every training example on every test point (eigh solves)."""
    loss = nn.CrossEntropyLoss()
    kw = dict(hessian=H, damping=damping, method="eigh", regularizer=_regularizer(), progress=progress)
    inf = influence(prob.model, loss, prob.train, prob.test, **kw)
    rel = relatif(prob.model, loss, prob.train, prob.test, **kw)
    v1 = prob.train_v1

    def idx(pair):
        return pair[1].tolist()

    def where(pair):
        return v1[pair[1].numpy()].tolist()

    h, m = most_helpful(inf, k), most_harmful(inf, k)
    rh, rm = most_helpful(rel, k), most_harmful(rel, k)
    return InfluenceResults(
        damping=damping,
        helpful=idx(h),
        harmful=idx(m),
        relatif_helpful=idx(rh),
        relatif_harmful=idx(rm),
        helpful_v1=where(h),
        harmful_v1=where(m),
        relatif_helpful_v1=where(rh),
        relatif_harmful_v1=where(rm),
        influence_max=inf.max(0).values.tolist(),
        influence_min=inf.min(0).values.tolist(),
        influence_sum=inf.sum(0).tolist(),
    )


def rue_study(prob: Problem, H, damping: float, cfg: Config, *, progress) -> RUEResults:
    """RUE of the test loss (true and predicted labels) and of the class probabilities."""
    loss = nn.CrossEntropyLoss()
    kw = dict(
        hessian=H,
        damping=damping,
        method="eigh",
        n_bootstrap=cfg.n_bootstrap,
        seed=cfg.seed,
        regularizer=_regularizer(),
        progress=progress,
    )
    true = rue(prob.model, loss, prob.train, prob.test, target="loss", label="true", **kw)
    minimal = rue(prob.model, loss, prob.train, prob.test, target="loss", label="predicted", **kw)
    pred = rue(prob.model, loss, prob.train, prob.test[0], output_fn=lambda o: o.softmax(-1), **kw)
    with torch.no_grad():
        theta_sq = sum(float(p.double().pow(2).sum()) for p in prob.model.parameters())
        L = nn.functional.cross_entropy(prob.model(prob.test[0]), prob.test[1], reduction="none").double()
        L = L + LAMBDA / (2 * N_TRAIN) * theta_sq
    B = PAPER_BOOTSTRAP
    return RUEResults(
        damping=damping,
        n_bootstrap=cfg.n_bootstrap,
        true=true.tolist(),
        minimal=minimal.tolist(),
        prediction=pred.sum(dim=1).tolist(),
        published_formula=((B - 1) / B**2 * L**2).tolist(),
    )


def extrapolation_study(prob: Problem, H) -> ExtrapolationResults:
    """The toolbox's scores: per-example loss gradients (regulariser included), thresholds t,
    at least the top 2 directions removed; compared with the published ones when given."""
    scores: dict[str, dict[str, list[float]]] = {v: {} for v in VERSIONS}
    n_removed: dict[str, int] = {}
    for t in THRESHOLDS:
        for version in VERSIONS:
            s = extrapolation_score(
                prob.model,
                prob.test,
                hessian=H,
                threshold=float(t),
                min_removed=2,
                gradient="loss",
                label=version,
                loss_fn=nn.CrossEntropyLoss(),
                regularizer=_regularizer(),
            )
            scores[version][t] = s.tolist()
            n_removed[t] = int(getattr(s, "n_removed"))  # noqa: B009 - set on the tensor
    res = ExtrapolationResults(n_removed, scores)
    if prob.published is not None:
        ours = np.array([scores[v][t] for v in VERSIONS for t in THRESHOLDS])
        theirs = np.array([prob.published[v][t] for v in VERSIONS for t in THRESHOLDS])
        res.published = {v: {t: prob.published[v][t].tolist() for t in THRESHOLDS} for v in VERSIONS}
        res.max_rel_err_vs_published = float(np.abs(ours / theirs - 1).max())
        res.n_compared = int(theirs.size)
    return res


# ---- report ------------------------------------------------------------------------------------


def _figure_phase_diagram(res: ToolboxResults):
    """Where the most helpful / harmful training examples of each test point lie in V1/J."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    tv = np.asarray(res.test_v1)
    inf = res.influence
    for ax, (title, helpful, harmful) in zip(
        axes,
        (
            ("influence", inf.helpful_v1, inf.harmful_v1),
            ("RelatIF", inf.relatif_helpful_v1, inf.relatif_harmful_v1),
        ),
    ):
        ax.axvspan(tv.min() * 0.8, 1.0, color="tab:blue", alpha=0.06)
        ax.axhspan(0.0, 1.0, color="tab:blue", alpha=0.06)
        for i, t in enumerate(tv):
            k = len(helpful[i])
            ax.plot(
                [t] * k,
                helpful[i],
                "^",
                color="tab:green",
                ms=4,
                alpha=0.7,
                label="most helpful" if i == 0 else None,
            )
            ax.plot(
                [t] * k,
                harmful[i],
                "v",
                color="tab:red",
                ms=4,
                alpha=0.7,
                label="most harmful" if i == 0 else None,
            )
        for j in res.misclassified:
            ax.axvline(tv[j], color="0.6", lw=0.6, ls=":")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlabel("test point's V1/J (dotted: misclassified)")
        ax.set_title(f"{title}: top {len(helpful[0])} training examples")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training example's V1/J (LL below 1, CDW-I above)")
    axes[0].legend(fontsize=8, loc="upper left")
    return fig


def _figure_scores(res: ToolboxResults):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    tv = np.asarray(res.test_v1)
    ex = res.extrapolation
    for ax, version in zip(axes[:2], VERSIONS):
        for t in THRESHOLDS:
            ax.plot(tv, ex.scores[version][t], "-o", ms=2.5, label=f"t = {t} (m = {ex.n_removed[t]})")
            if ex.published is not None:
                ax.plot(tv, ex.published[version][t], "k+", ms=5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("test point's V1/J")
        ax.set_title(f"extrapolation score, {version} label" + (" (+: published)" if ex.published else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    for name in ("true", "minimal", "prediction"):
        ax.plot(tv, getattr(res.rue, name), "-o", ms=2.5, label=f"RUE, {name}")
    ax.plot(tv, res.rue.published_formula, ":", color="0.5", label="what the original returned")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("test point's V1/J")
    ax.set_title(f"RUE (B = {res.rue.n_bootstrap})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def write_report(work: WorkDir, res: ToolboxResults, eigenvalues) -> Path:
    """report.md / report.html / results.json and the figures."""
    sp, inf, ex = res.spectrum, res.influence, res.extrapolation
    with work.report("Hessian-based toolbox (Dawid et al. 2022), reproduced") as rep:
        rep.text(
            f"Source: {res.source}. Training data: {res.training_data}. Test accuracy "
            f"{res.test_accuracy:.2f} (paper: {PAPER['test_accuracy']}); misclassified test rows "
            f"{res.misclassified} (paper: {PAPER['misclassified']}). V1/J in the paper's units."
        )
        rep.heading("Hessian")
        rep.table(
            ["quantity", "ours", "paper (stored Hessian)"],
            [
                ["P", sp.n_params, 740],
                [
                    "top eigenvalues",
                    ", ".join(f"{v:.4g}" for v in sp.lambda_top),
                    ", ".join(map(str, PAPER["lambda_top"])),
                ],
                ["λ_min", f"{sp.lambda_min:.4g}", PAPER["lambda_min"]],
                [
                    "λ < 0 (of which < −1e-6·max|λ|)",
                    f"{sp.n_negative} ({sp.n_negative_significant})",
                    PAPER["n_negative"],
                ],
                ["|λ| < 1e-4", sp.n_abs_below_1e4, 517],
                ["trace", f"{sp.trace:.4g}", PAPER["trace"]],
            ],
        )
        rep.figure(
            figures.spectrum(eigenvalues, damping=inf.damping, threshold=1.0, title="Hessian spectrum"),
            "spectrum",
            f"The exact Hessian's eigenvalues ({sp.source}); the dashed line is −δ of influence, the "
            "dotted one the largest extrapolation threshold t = 1.",
        )
        rep.heading("Influence and RelatIF")
        rows = []
        for i in sorted({0, 16, 21, 40} & set(range(len(inf.helpful)))):
            rows.append(
                [
                    i,
                    f"{res.test_v1[i]:.3g}",
                    inf.helpful[i],
                    inf.harmful[i],
                    inf.relatif_helpful[i],
                    f"{inf.influence_max[i]:.3g} / {inf.influence_min[i]:.3g} / {inf.influence_sum[i]:.3g}",
                ]
            )
        rep.text(
            f"Damping δ = {inf.damping:g}. Training indices in V1 order (0-499: V1/J ∈ [0, 1], LL; "
            "500-999: [1.01, 40], CDW-I). The paper's notebook: test 16 most helpful 496-500, most "
            "harmful 501-505, RelatIF most helpful 332-336; test 0 IF max / min / sum 1.110e-4 / "
            "−9.286e-4 / 4.103e-2; test 21 2.478e-2 / −2.850e-3 / −0.3618."
        )
        rep.table(
            ["test", "V1/J", "most helpful", "most harmful", "RelatIF most helpful", "IF max / min / sum"],
            rows,
        )
        rep.figure(
            _figure_phase_diagram(res),
            "phase_diagram",
            "Phase diagram of attribution: for every test point (x, its V1/J) the V1/J of its most "
            "helpful (green) and most harmful (red) training examples; shaded: the LL phase.",
        )
        rep.heading("RUE and extrapolation scores")
        rep.text(
            f"RUE: damping {res.rue.damping:g}, B = {res.rue.n_bootstrap} bootstrap models. The "
            "original's published RUE kept one bootstrap row only: (B−1)/B²·L² (dotted line; the paper's "
            f"'true' values run from {PAPER['published_rue_true_test0_test21'][0]:.3g} at test 0 to "
            f"{PAPER['published_rue_true_test0_test21'][1]:.3g} at test 21). Extrapolation thresholds "
            "t = 1, 0.1, 0.01, 0.001 remove m = "
            + ", ".join(str(ex.n_removed[t]) for t in THRESHOLDS)
            + " directions (paper: 2, 12, 51, 99)."
        )
        if ex.published is not None:
            rep.text(
                f"Agreement with the {ex.n_compared} published extrapolation scores: largest relative "
                f"difference {ex.max_rel_err_vs_published:.2e}."
            )
            header = ["test"] + [f"t = {t}, {v}: ours / published" for v in VERSIONS for t in THRESHOLDS]
            rep.table(
                header,
                [
                    [i]
                    + [
                        f"{ex.scores[v][t][i]:.6g} / {ex.published[v][t][i]:.6g}"
                        for v in VERSIONS
                        for t in THRESHOLDS
                    ]
                    for i in range(len(res.test_v1))
                ],
            )
        rep.figure(
            _figure_scores(res),
            "scores",
            "Extrapolation scores per threshold (true and predicted label) and RUE against the test "
            "point's V1/J; the vertical line is the LL/CDW-I transition.",
        )
        rep.heading("Timings")
        rep.table(
            ["stage", "wall s", "CPU s"],
            [[k, f"{v:.1f}", f"{res.cpu_s.get(k, float('nan')):.1f}"] for k, v in res.timings_s.items()],
        )
        write_json(rep.tmp / "results.json", res)
        return rep.finish()


def print_agreement(ex: ExtrapolationResults) -> None:
    """The published scores beside ours, one line per (threshold, version, test point)."""
    if ex.published is None:
        return
    print("extrapolation scores, ours vs published (relative difference):")
    for v in VERSIONS:
        for t in THRESHOLDS:
            print(f"  t = {t}, {v} label (m = {ex.n_removed[t]}):")
            for i, (a, b) in enumerate(zip(ex.scores[v][t], ex.published[v][t])):
                print(f"    test {i:2d}: {a:.8g}  {b:.8g}  {abs(a / b - 1):.1e}")
    print(f"all {ex.n_compared}: largest relative difference {ex.max_rel_err_vs_published:.2e}")


# ---- the command -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--reference DIR (the original's model, Hessian and data), --checkpoint FILE."""
    parser.add_argument(
        "--reference",
        default=None,
        metavar="DIR",
        help="run on the original toolbox's stored model, Hessian and data (its repository "
        "folder, or hessext's copy) and compare with its published extrapolation scores",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="a Conv1DToolbox state dict to analyse instead of training one (generated data)",
    )


def run(args) -> Path:
    """The whole notebook into args.out; returns the report folder."""
    if args.reference is not None and args.checkpoint is not None:
        raise UserError(
            "--reference and --checkpoint exclude each other (the reference brings its own model)"
        )
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise UserError(f"--checkpoint {args.checkpoint}: not a file")
    if args.reference is not None and not Path(args.reference).is_dir():
        raise UserError(f"--reference {args.reference}: not a folder")
    cfg = Config.make(args.quick, args.seed)
    return run_study(
        cfg,
        args.out,
        reference=args.reference,
        checkpoint=args.checkpoint,
        progress=False if args.no_progress else None,
    )


def run_study(
    cfg: Config, out, *, reference=None, checkpoint=None, progress=None, quiet: bool = False
) -> Path:
    """The notebook of ``cfg`` in the work folder ``out`` (on the reference folder when given);
    returns the report folder."""
    work = WorkDir(out, NAME)
    timer = StageTimer(5, quiet=quiet)
    with timer.stage("data and model"):
        prob = (
            reference_problem(reference)
            if reference is not None
            else generated_problem(cfg, work, checkpoint, progress=progress)
        )
    with timer.stage("exact Hessian and spectrum"):
        if prob.hessian is not None:
            H = prob.hessian
            how = "the original's stored Hessian"
        else:
            H = hessian(
                prob.model,
                nn.CrossEntropyLoss(reduction="none"),
                prob.train,
                regularizer=_regularizer(),
                progress=progress,
            )
            how = "exact, computed here (mean cross-entropy + (λ/2n)‖θ‖²)"
        spectrum = spectrum_of(H, how)
        if prob.hessian is not None:
            d_if, d_rue = PAPER["damping_influence"], PAPER["damping_rue"]
        else:
            settings = choose_settings(H.eigvalsh())
            d_if, d_rue = settings["damping_influence"], settings["damping_rue"]
    with timer.stage("influence and RelatIF"):
        inf = influence_study(prob, H, d_if, cfg.top_k, progress=progress)
    with timer.stage("RUE"):
        rue_res = rue_study(prob, H, d_rue, cfg, progress=progress)
    with timer.stage("extrapolation scores"):
        ex = extrapolation_study(prob, H)
    with torch.no_grad():
        pred = prob.model(prob.test[0]).argmax(1)
    y = prob.test[1]
    res = ToolboxResults(
        config=dataclasses.asdict(cfg),
        source=prob.source,
        training_data=prob.training_data,
        test_v1=np.asarray(prob.test_v1).tolist(),
        test_labels=y.tolist(),
        test_predictions=pred.tolist(),
        test_accuracy=float((pred == y).double().mean()),
        misclassified=(pred != y).nonzero().flatten().tolist(),
        spectrum=spectrum,
        influence=inf,
        rue=rue_res,
        extrapolation=ex,
        timings_s=dict(timer.timings) | {"total": timer.total},
        cpu_s=dict(timer.cpu_timings) | {"total": timer.cpu_total},
    )
    path = write_report(work, res, H.eigvalsh())
    if not quiet:
        print_agreement(ex)
    return path
