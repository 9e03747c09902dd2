"""The disordered-SSH population study (Cybiński et al. 2024; docs/ssh-study.md): the data of
one protocol, everything measured on one trained network, and the population's statistics.

Per network (:func:`analyse_model`): the paper's recipe (hessext.models.SSH_RECIPE) from its
seed; in-distribution precision/recall/F1 (macro averages over the two classes, clean test
set); accuracy on the out-of-distribution sets W ∈ {0.15, 0.5, 1, 2}; the generalisation map
(the predicted topological fraction over a (W, v) grid) against the generator's target phase
diagram, with its accuracy (the paper's "Accuracy"), RMSE and SSIM; CAM and grad-CAM on the
clean test set and their focus on the edge-state columns and rows; PCA of every recorded layer
fitted on the clean test set and applied to the disordered sets; and beyond the paper the exact
Hessian of the training loss (trace, λ_max, outliers), the local-ensemble extrapolation score
and RUE on the disordered sets, and how well each flags the disordered inputs the network gets
wrong (AUROC).

Across networks (:func:`population`): the spread of OOD accuracy and the Spearman correlation of
every per-network signal with it, with bootstrap intervals.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from hessext.apps import analysis as tb
from hessext.boundary import outlier_count
from hessext.datasets.ssh import SSHData, SSHSplits, make_ssh, phase_diagram, study_splits
from hessext.interpret import ActivationPCA, cam, grad_cam, record_activations
from hessext.models import SSH_RECIPE, SSHCNN
from hessext.reporting.stats import Correlation, spearman_interval, ssim
from hessext.training import PlateauStop, Recipe, fit
from hessext.uncertainty import extrapolation_score, rue

__all__ = [
    "W_OOD",
    "Protocol",
    "PROTOCOLS",
    "StudyData",
    "make_data",
    "map_target",
    "signal_value",
    "EDGE_COLUMNS",
    "EDGE_ROWS",
    "PCA_LAYERS",
    "ModelResult",
    "analyse_model",
    "edge_focus",
    "classification_scores",
    "Population",
    "population",
    "SIGNALS",
    "PAPER",
    "machine",
]

W_OOD = (0.15, 0.5, 1.0, 2.0)
# The edge states: the two zero modes are eigenstates 24 and 25 (columns), localised on the
# chain's end sites 0 and 49 (rows). CAMs come from a 26×26 layer (2 image pixels per map
# pixel), so the region takes one more column and row on each side: columns 23-26 ∪ rows
# {0, 1, 48, 49}, 384 of the 2,500 pixels.
EDGE_COLUMNS = (23, 24, 25, 26)
EDGE_ROWS = (0, 1, 48, 49)
# Recorded layers for the activation PCA (the paper's: raw input, conv1, the ends of its two
# Sequential blocks, conv3, the GAP output); "input" and "gap" are not modules of SSHCNN.
PCA_LAYERS = ("input", "block1.0", "block1", "block2", "block3.0", "block3", "gap")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Sizes and settings of one run of the study.

    n_train, n_val, n_test, n_perturb: study_splits' sizes (n_ood = n_test per W); recipe: the
    training recipe; map_*: the generalisation map's grid, v = linspace(0.002, 2.002, map_n_v)
    × W = linspace(0, map_w_max, map_n_w), map_realisations disorder draws per cell (targets
    from target_realisations draws, labels only); n_hessian: the evenly spaced training images
    the Hessian, RUE and the extrapolation score are computed on; n_bootstrap: RUE's B;
    models: the default population size."""

    name: str
    n_train: int
    n_val: int
    n_test: int
    n_perturb: int
    recipe: Recipe
    map_n_v: int
    map_n_w: int
    map_w_max: float
    map_realisations: int
    target_realisations: int
    n_hessian: int
    n_bootstrap: int
    models: int
    data_seed: int = 0


PROTOCOLS = {
    # The paper's: 5000-1000-500 with the W = 0.01, 0.05 sets appended, its recipe, 100 CNNs.
    # The paper's map was 100 W-slices × 200 v × 10 realisations; ours is coarser
    # (51 × 100 × 4 = 20,400 images, ~200 MB), its targets from 25 realisations as theirs.
    "full": Protocol(
        name="full",
        n_train=5000,
        n_val=1000,
        n_test=500,
        n_perturb=500,
        recipe=SSH_RECIPE,
        map_n_v=100,
        map_n_w=51,
        map_w_max=5.0,
        map_realisations=4,
        target_realisations=25,
        n_hessian=2000,
        n_bootstrap=50,
        models=100,
    ),
    # --quick: a fifth of the data, 120 epochs at most (warm-up 30) and so 10x the learning rate
    # (1e-3): at 1e-4 a network on this set is still far from converged after 300 epochs
    # (validation loss 0.34, clean accuracy 0.92; measured), at 1e-3 it is there in ~100.
    "quick": Protocol(
        name="quick",
        n_train=1000,
        n_val=200,
        n_test=200,
        n_perturb=100,
        recipe=SSH_RECIPE.replace(
            lr=1e-3, max_epochs=120, early_stopping=PlateauStop(patience=10, tolerance=0.005, warmup=30)
        ),
        map_n_v=50,
        map_n_w=26,
        map_w_max=5.0,
        map_realisations=2,
        target_realisations=25,
        n_hessian=400,
        n_bootstrap=30,
        models=10,
    ),
}


# --------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class StudyData:
    """The data every network of a run shares (regenerated from the protocol's seed, never
    stored). grid: the generalisation-map samples ordered (W, realisation, v); target:
    [n_w, n_v] topological fraction; hessian_index: the training images of the curvature."""

    splits: SSHSplits
    grid: SSHData
    grid_v: torch.Tensor
    grid_w: torch.Tensor
    target: torch.Tensor
    hessian_index: torch.Tensor

    def ood_sets(self) -> list[tuple[float, SSHData]]:
        return sorted(self.splits.ood.items())


def _map_seed(protocol: Protocol) -> int:
    return 10_000 * (protocol.data_seed + 1)  # streams apart from the splits' (seed·1000 + k)


def map_target(protocol: Protocol) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grid_v [n_v], grid_w [n_w], target [n_w, n_v]): the generalisation map's grid and the
    generator's phase diagram on it (fraction topological over target_realisations draws)."""
    p = protocol
    grid_v = torch.linspace(0.002, 2.002, p.map_n_v, dtype=torch.float64)
    grid_w = torch.linspace(0.0, p.map_w_max, p.map_n_w, dtype=torch.float64)
    return grid_v, grid_w, phase_diagram(grid_v, grid_w, p.target_realisations, seed=_map_seed(p) + 7)


def make_data(protocol: Protocol) -> StudyData:
    """The protocol's data: study_splits, the map grid and its target phase diagram."""
    p = protocol
    splits = study_splits(
        p.data_seed, n_train=p.n_train, n_val=p.n_val, n_test=p.n_test, n_perturb=p.n_perturb, w_ood=W_OOD
    )
    grid_v, grid_w, target = map_target(p)
    base = _map_seed(p)
    grid = SSHData.cat(
        [make_ssh(grid_v.repeat(p.map_realisations), float(w), seed=base + k) for k, w in enumerate(grid_w)]
    )
    n = len(splits.train)
    index = torch.linspace(0, n - 1, min(p.n_hessian, n)).round().long()
    return StudyData(splits, grid, grid_v, grid_w, target, index)


# ----------------------------------------------------------------------------------- measures


def classification_scores(y: torch.Tensor, pred: torch.Tensor) -> dict[str, float]:
    """Accuracy and the macro averages over the two classes of precision, recall and F1 (a
    class never predicted has precision 0, as scikit-learn's zero_division=0)."""
    y, pred = y.long(), pred.long()
    out = {"accuracy": float((y == pred).double().mean())}
    precision, recall, f1 = [], [], []
    for c in (0, 1):
        tp = int(((pred == c) & (y == c)).sum())
        n_pred, n_true = int((pred == c).sum()), int((y == c).sum())
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_true if n_true else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    out.update(precision=float(np.mean(precision)), recall=float(np.mean(recall)), f1=float(np.mean(f1)))
    out.update(trivial_recall=recall[0], topological_recall=recall[1])
    return out


def edge_focus(maps: torch.Tensor) -> torch.Tensor:
    """How much of each map lies on the edge-state columns and rows: maps [N, 50, 50] are
    min-max normalised to [0, 1] (as the paper shows them), and the focus is the mean over the
    edge region (EDGE_COLUMNS ∪ EDGE_ROWS) divided by the mean over the whole image — 1 for no
    preference, 2500/384 ≈ 6.5 for a map that lives only there. NaN for a constant map. [N]."""
    m = maps.double()
    lo = m.amin(dim=(1, 2), keepdim=True)
    span = m.amax(dim=(1, 2), keepdim=True) - lo
    m = (m - lo) / torch.where(span > 0, span, torch.ones_like(span))
    region = torch.zeros(m.shape[1:], dtype=torch.bool)
    region[:, list(EDGE_COLUMNS)] = True
    region[list(EDGE_ROWS), :] = True
    focus = m[:, region].mean(1) / m.mean(dim=(1, 2))
    return torch.where(span.flatten() > 0, focus, torch.full_like(focus, math.nan))


def _logits(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s : s + batch]) for s in range(0, len(x), batch)])


def _nanmean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def _auroc_or_nan(negatives, positives) -> float:
    """AUROC for "positives score higher", NaN when either group is empty."""
    if len(negatives) == 0 or len(positives) == 0:
        return math.nan
    return tb.auroc(negatives, positives)


class _Clock:
    """Wall and process CPU seconds per named stage."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = time.perf_counter() - t
            self.cpu[name] = time.process_time() - c


@dataclasses.dataclass
class ModelResult:
    """Everything measured on one network (results.json's ``models`` entries).

    id_*: clean test set (macro precision/recall/F1); ood_accuracy: {W: accuracy} on the four
    disordered test sets; map_*: the generalisation map's accuracy over all its samples (the
    paper's "Accuracy", the population's OOD accuracy), per-class recalls, RMSE and SSIM
    against the target diagram; cam_focus, grad_cam_focus: edge_focus of the topological-class
    maps of the clean topological test inputs (mean); trace, lambda_max, lambda_min,
    n_negative, n_outliers: the exact Hessian's spectrum (outliers: hessext.boundary's gap
    rule); extrapolation_ood_mean, rue_ood_mean: means over the disordered inputs;
    extrapolation_auroc, rue_auroc, margin_auroc: AUROC of the signal (margin: -|f_1 - f_0|,
    the confidence baseline) for "this disordered input is misclassified"; *_shift_auroc: clean
    vs W = 2 inputs; pca: per recorded layer the explained-variance ratios of the two
    components fitted on the clean test set, and ood_pc1_separation = max(a, 1 - a) with a the
    AUROC of PC1 for the true label on the disordered sets; seconds, cpu_seconds: per stage.
    """

    seed: int
    epochs: int
    stopped_early: bool
    final_train_loss: float
    final_val_loss: float
    id_accuracy: float
    id_precision: float
    id_recall: float
    id_f1: float
    ood_accuracy: dict[str, float]
    map_accuracy: float
    map_topological_recall: float
    map_trivial_recall: float
    rmse: float
    ssim: float
    cam_focus: float
    grad_cam_focus: float
    trace: float
    lambda_max: float
    lambda_min: float
    n_negative: int
    n_outliers: int
    damping_rue: float
    score_threshold: float
    n_removed: int
    extrapolation_ood_mean: float
    rue_ood_mean: float
    extrapolation_auroc: float
    rue_auroc: float
    margin_auroc: float
    extrapolation_shift_auroc: float
    rue_shift_auroc: float
    pca: dict[str, dict[str, object]]
    seconds: dict[str, float]
    cpu_seconds: dict[str, float]


def analyse_model(
    seed: int, protocol: Protocol, data: StudyData, *, progress: bool | None = False
) -> tuple[ModelResult, dict]:
    """Train network ``seed`` by the protocol and measure it. Returns (ModelResult, artifacts):
    artifacts hold what the figures need (state_dict, the map [n_w, n_v], example CAMs, the GAP
    activations and their PCA scores of the clean and disordered test sets)."""
    sp = data.splits
    clock = _Clock()
    model = SSHCNN(seed=seed)
    with clock("train"):
        _, log = fit(
            model,
            protocol.recipe,
            (sp.train.images, sp.train.y),
            (sp.val.images, sp.val.y),
            seed=seed,
            progress=progress,
        )
    model.eval()
    ood = data.ood_sets()

    with clock("accuracy and map"):
        pred_test = _logits(model, sp.test.images).argmax(1)
        scores = classification_scores(sp.test.y, pred_test)
        ood_logits = {w: _logits(model, d.images) for w, d in ood}
        ood_accuracy = {f"{w:g}": float((ood_logits[w].argmax(1) == d.y).double().mean()) for w, d in ood}
        pred_grid = _logits(model, data.grid.images).argmax(1)
        n_w, n_v = len(data.grid_w), len(data.grid_v)
        gen_map = pred_grid.double().reshape(n_w, -1, n_v).mean(1)
        grid_scores = classification_scores(data.grid.y, pred_grid)
        target = data.target
        rmse = float((gen_map - target).square().mean().sqrt())
        map_ssim = ssim(gen_map.numpy(), target.numpy(), data_range=1.0)

    with clock("CAM"):
        topo = torch.nonzero(sp.test.y == 1).flatten()
        x_topo = sp.test.images[topo]
        cam_maps = cam(model, x_topo, "block3", target=1, upsample=True)
        grad_maps = grad_cam(model, x_topo, "block3", target=1, upsample=True)
        cam_focus = _nanmean(edge_focus(cam_maps))
        grad_cam_focus = _nanmean(edge_focus(grad_maps))
        # examples for the figures: the paper's Fig. 2 input (v ≈ 0.106) and a trivial one
        examples = torch.stack([(sp.test.v - v0).abs().argmin() for v0 in (0.106, 1.5)])
        x_ex = sp.test.images[examples]
        example_maps = {
            "index": examples,
            "x": x_ex[:, 0].clone(),
            "v": sp.test.v[examples].clone(),
            "cam": cam(model, x_ex, "block3", upsample=True),
            "grad_cam": grad_cam(model, x_ex, "block3", upsample=True),
            "pred": _logits(model, x_ex).argmax(1),
        }

    with clock("activation PCA"):
        x_all = torch.cat([sp.test.images] + [d.images for _, d in ood])
        y_all = torch.cat([sp.test.y] + [d.y for _, d in ood])
        set_w = torch.cat([torch.zeros(len(sp.test))] + [torch.full((len(d),), w) for w, d in ood])
        acts = record_activations(
            model, x_all, ["block1.0", "block1", "block2", "block3.0", "block3"], batch_size=500
        )
        acts["input"] = x_all
        acts["gap"] = acts["block3"].mean(dim=(2, 3))
        n_test = len(sp.test)
        is_ood = torch.arange(len(x_all)) >= n_test
        pca_summary: dict[str, dict[str, object]] = {}
        gap_scores = None
        for layer in PCA_LAYERS:
            pca = ActivationPCA(2).fit(acts[layer][:n_test])
            z = pca.transform(acts[layer])
            a = _auroc_or_nan(z[is_ood & (y_all == 0), 0], z[is_ood & (y_all == 1), 0])
            assert pca.explained_variance_ratio_ is not None
            pca_summary[layer] = {
                "explained_variance_ratio": [float(r) for r in pca.explained_variance_ratio_],
                "ood_pc1_separation": max(a, 1 - a) if math.isfinite(a) else math.nan,
            }
            if layer == "gap":
                gap_scores = z
        gap = acts["gap"].clone()
        del acts

    with clock("Hessian"):
        hx, hy = sp.train.images[data.hessian_index], sp.train.y[data.hessian_index]
        H = tb.exact_hessian(model, hx, hy, progress=progress)
        lam, _ = H.eigh()
        st = tb.choose_settings(lam)
        n_outliers = outlier_count(lam)

    with clock("RUE and extrapolation score"):
        x_eval = x_all
        rue_var = rue(
            model,
            nn.CrossEntropyLoss(),
            (hx, hy),
            x_eval,
            hessian=H,
            damping=st["damping_rue"],
            method="eigh",
            n_bootstrap=protocol.n_bootstrap,
            seed=seed,
            output_fn=tb.logit_margin,
            bootstrap_batch=1,  # as hessext/apps/analysis.py: faster and lighter than vmapping all B
            progress=progress,
        )
        score = extrapolation_score(
            model, x_eval, hessian=H, threshold=st["score_threshold"], min_removed=st["min_removed"]
        )
        n_removed = int(score.n_removed)  # type: ignore[attr-defined]
        logits_all = torch.cat([_logits(model, sp.test.images)] + [ood_logits[w] for w, _ in ood])
        wrong = (logits_all.argmax(1) != y_all) & is_ood
        right = (~wrong) & is_ood
        margin_abs = tb.logit_margin(logits_all).abs().double()
        w2 = set_w == 2.0
        clean = ~is_ood

        def au_wrong(signal):
            return _auroc_or_nan(signal[right], signal[wrong])

        def au_shift(signal):
            return _auroc_or_nan(signal[clean], signal[w2])

    result = ModelResult(
        seed=seed,
        epochs=log.epochs,
        stopped_early=log.stopped_early,
        final_train_loss=log.train_loss[-1],
        final_val_loss=log.val_loss[-1],
        id_accuracy=scores["accuracy"],
        id_precision=scores["precision"],
        id_recall=scores["recall"],
        id_f1=scores["f1"],
        ood_accuracy=ood_accuracy,
        map_accuracy=grid_scores["accuracy"],
        map_topological_recall=grid_scores["topological_recall"],
        map_trivial_recall=grid_scores["trivial_recall"],
        rmse=rmse,
        ssim=map_ssim,
        cam_focus=cam_focus,
        grad_cam_focus=grad_cam_focus,
        trace=st["trace"],
        lambda_max=st["lambda_max"],
        lambda_min=st["lambda_min"],
        n_negative=st["n_negative"],
        n_outliers=n_outliers,
        damping_rue=st["damping_rue"],
        score_threshold=st["score_threshold"],
        n_removed=n_removed,
        extrapolation_ood_mean=float(score[is_ood].mean()),
        rue_ood_mean=float(rue_var[is_ood].mean()),
        extrapolation_auroc=au_wrong(score),
        rue_auroc=au_wrong(rue_var),
        margin_auroc=au_wrong(-margin_abs),
        extrapolation_shift_auroc=au_shift(score),
        rue_shift_auroc=au_shift(rue_var),
        pca=pca_summary,
        seconds=dict(clock.wall),
        cpu_seconds=dict(clock.cpu),
    )
    artifacts = {
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "map": gen_map,
        "examples": example_maps,
        "gap": gap,
        "gap_pca": gap_scores,
        "labels": y_all,
        "set_w": set_w,
        "eigenvalues": lam.double().clone(),
        "train_loss": log.train_loss,
        "val_loss": log.val_loss,
    }
    return result, artifacts


# ---------------------------------------------------------------------------------- population

# per-network signal: (what it is, whether computing it needs the disordered sets' labels)
SIGNALS = {
    "id_f1": ("in-distribution macro F1 (clean test set)", False),
    "final_val_loss": ("validation loss at the end of training", False),
    "cam_focus": ("CAM focus on the edge-state columns/rows (clean test)", False),
    "grad_cam_focus": ("grad-CAM focus on the edge-state columns/rows (clean test)", False),
    "trace": ("trace of the training-loss Hessian", False),
    "lambda_max": ("largest Hessian eigenvalue λ_max", False),
    "n_outliers": ("Hessian outlier eigenvalues (gap rule)", False),
    "extrapolation_ood_mean": ("mean extrapolation score on the disordered inputs", False),
    "rue_ood_mean": ("mean RUE (logit-margin variance) on the disordered inputs", False),
    "gap_ood_pc1_separation": ("GAP-layer PC1 label separation on the disordered sets", True),
    "extrapolation_auroc": ("AUROC of the extrapolation score for OOD errors", True),
    "rue_auroc": ("AUROC of RUE for OOD errors", True),
    "margin_auroc": ("AUROC of -|logit margin| for OOD errors (baseline)", True),
    "ssim": ("SSIM of the generalisation map vs the target diagram", True),
    "rmse": ("RMSE of the generalisation map vs the target diagram", True),
}


def signal_value(m: ModelResult, name: str) -> float:
    """The value of signal ``name`` (a key of SIGNALS) for network m."""
    if name == "gap_ood_pc1_separation":
        return float(m.pca["gap"]["ood_pc1_separation"])  # type: ignore[arg-type]
    return float(getattr(m, name))


@dataclasses.dataclass
class Population:
    """The population's OOD accuracy (the generalisation map's, as the paper's "Accuracy") —
    mean, median, min, max, how many networks exceed 0.8 and fall below 0.6 — the mean accuracy
    per disordered test set, and for each signal in SIGNALS its Spearman correlation with OOD
    accuracy across networks with a 95 % percentile-bootstrap interval."""

    n_models: int
    ood_accuracy_mean: float
    ood_accuracy_median: float
    ood_accuracy_min: float
    ood_accuracy_max: float
    above_0_8: int
    below_0_6: int
    ood_set_accuracy_mean: dict[str, float]
    id_f1_mean: float
    spearman: dict[str, Correlation]


def population(models: list[ModelResult], *, n_boot: int = 2000, seed: int = 0) -> Population:
    """Population statistics of the networks ``models`` (at least 3 for correlations)."""
    if not models:
        raise ValueError("population: no models")
    acc = np.array([m.map_accuracy for m in models])
    keys = list(models[0].ood_accuracy)
    return Population(
        n_models=len(models),
        ood_accuracy_mean=float(acc.mean()),
        ood_accuracy_median=float(np.median(acc)),
        ood_accuracy_min=float(acc.min()),
        ood_accuracy_max=float(acc.max()),
        above_0_8=int((acc > 0.8).sum()),
        below_0_6=int((acc < 0.6).sum()),
        ood_set_accuracy_mean={k: float(np.mean([m.ood_accuracy[k] for m in models])) for k in keys},
        id_f1_mean=float(np.mean([m.id_f1 for m in models])),
        spearman={
            name: spearman_interval([signal_value(m, name) for m in models], acc, n_boot=n_boot, seed=seed)
            for name in SIGNALS
        },
    )


# The paper's published population (PAPERS §3.6, from all_stats_10_real_100_slices.csv).
PAPER = {
    "n_models": 100,
    "ood_accuracy_mean": 0.662,
    "ood_accuracy_median": 0.607,
    "ood_accuracy_min": 0.491,
    "ood_accuracy_max": 0.917,
    "above_0_8": 25,
    "below_0_6": 46,
    "topological_recall_median": 0.994,
    "trivial_recall_median": 0.372,
    "correlation_with_accuracy": {"rmse": -0.995, "lpips": -0.988, "ssim": 0.906},
    "id_f1_demo_model": 1.0,
}


def machine() -> dict[str, object]:
    """The processor, its CPU count, torch's thread count and the load average now."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
