"""``hessext demo``: the whole Hessian toolbox on the disordered SSH chain (docs/methods.md §8),
repeated over several seeds so that what it concludes does not depend on one draw.

Each seed draws its own data, initialises and trains its own network and runs the whole
analysis (exact Hessian, influence and RelatIF, RUE, extrapolation score, CAM). Every number in
the report is the mean ± standard deviation over the seeds, and each claim is decided per seed
against a dead zone: it is stated true (or false) only when every seed lands on the same side,
and "not settled" otherwise. results.json beside the report holds the seeds, every number as
mean and std, the per-seed values and the conclusions {claim: true / false / null}.

RUE here is the bootstrap variance of the logit margin f_topological - f_trivial, not of the
class probabilities: the trained network is confident, its softmax saturates, and the variance
of a saturated probability (~1e-10) measures the margin, not the uncertainty
(hessext.apps.analysis.logit_margin).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from hessext.apps import analysis as tb
from hessext.apps.ssh_study import machine
from hessext.datasets.ssh import critical_v, ssh_splits
from hessext.interpret import cam
from hessext.models import SSHCNN
from hessext.reporting import figures as F
from hessext.reporting.report import Report, StageTimer
from hessext.reporting.results import MeanStd, mean_std, write_json
from hessext.training import train

# n_train: training images at W = 0 (half at v in [0, 0.8], half in [1.2, 2]), at most n_eval;
# n_eval: images per validation/test/OOD set. The exact Hessian (P = 1,024, packed-tangent path
# for the BatchNorm CNN) takes about 4 s for 200 images on 2 cores.
SIZES = {
    "small": dict(n_train=12, n_eval=24, epochs=15, batch_size=6, n_bootstrap=10),
    "default": dict(n_train=200, n_eval=200, epochs=40, batch_size=16, n_bootstrap=30),
    "large": dict(n_train=200, n_eval=500, epochs=40, batch_size=16, n_bootstrap=50),
}
N_SEEDS = 3
W_SETS = (0.15, 0.5, 1.0, 2.0)
SET_NAMES = ["W = 0 (test)", *[f"W = {w:g}" for w in W_SETS]]
STATE_NAMES = {0: "trivial", 1: "topological"}


@dataclasses.dataclass(frozen=True)
class Claim:
    """A statement decided per seed: value(seed) > above everywhere → true, < below everywhere →
    false, anything else (including a NaN) → not settled. The gap between below and above is a
    dead zone, so that two runs with other seeds cannot settle it opposite ways by noise."""

    name: str
    true_text: str
    false_text: str
    quantity: str
    above: float
    below: float


CLAIMS = [
    Claim(
        "accuracy_drops_with_disorder",
        "accuracy on strongly disordered chains (W = 2) is lower than on clean ones",
        "accuracy on strongly disordered chains (W = 2) is not lower than on clean ones",
        "accuracy(W = 0) - accuracy(W = 2)",
        0.05,
        -0.05,
    ),
    Claim(
        "score_flags_disorder",
        "the extrapolation score is higher for disordered (W = 2) than for clean inputs",
        "the extrapolation score is LOWER for disordered (W = 2) than for clean inputs",
        "AUROC of the extrapolation score, clean vs W = 2",
        0.6,
        0.4,
    ),
    Claim(
        "rue_flags_disorder",
        "RUE is higher for disordered (W = 2) than for clean inputs",
        "RUE is LOWER for disordered (W = 2) than for clean inputs",
        "AUROC of RUE, clean vs W = 2",
        0.6,
        0.4,
    ),
    Claim(
        "score_beats_rue_on_disorder",
        "the extrapolation score separates disordered from clean inputs better than RUE",
        "RUE separates disordered from clean inputs better than the extrapolation score",
        "AUROC(score) - AUROC(RUE), clean vs W = 2",
        0.05,
        -0.05,
    ),
    Claim(
        "score_flags_errors",
        "the extrapolation score is higher for the disordered inputs the network gets wrong",
        "the extrapolation score is LOWER for the disordered inputs the network gets wrong",
        "AUROC of the extrapolation score, correct vs wrong disordered inputs",
        0.6,
        0.4,
    ),
    Claim(
        "rue_flags_errors",
        "RUE is higher for the disordered inputs the network gets wrong",
        "RUE is LOWER for the disordered inputs the network gets wrong",
        "AUROC of RUE, correct vs wrong disordered inputs",
        0.6,
        0.4,
    ),
    Claim(
        "not_at_a_minimum",
        "the trained network is not at a minimum of its training loss (negative Hessian eigenvalues)",
        "the trained network is at a minimum of its training loss (no negative Hessian eigenvalue)",
        "number of negative eigenvalues",
        0.5,
        0.5,
    ),
]


def settle(values, *, above: float, below: float) -> bool | None:
    """True if every value > above, False if every value < below, else None (not settled)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        return None
    if (v > above).all():
        return True
    if (v < below).all():
        return False
    return None


@dataclasses.dataclass
class SeedResult:
    """One seed's numbers (results.json's ``per_seed``)."""

    seed: int
    accuracy: dict[str, float]
    final_train_loss: float
    lambda_max: float
    lambda_min: float
    trace: float
    n_negative: int
    damping_influence: float
    damping_rue: float
    score_threshold: float
    n_removed: int
    rue_median: dict[str, float]
    score_median: dict[str, float]
    auroc_score_shift: float
    auroc_rue_shift: float
    auroc_score_errors: float
    auroc_rue_errors: float
    n_ood_errors: int
    hessian_seconds: float

    def claim_values(self) -> dict[str, float]:
        """The quantity each claim in CLAIMS is decided on, for this seed."""
        return {
            "accuracy_drops_with_disorder": self.accuracy["W = 0 (test)"] - self.accuracy["W = 2"],
            "score_flags_disorder": self.auroc_score_shift,
            "rue_flags_disorder": self.auroc_rue_shift,
            "score_beats_rue_on_disorder": self.auroc_score_shift - self.auroc_rue_shift,
            "score_flags_errors": self.auroc_score_errors,
            "rue_flags_errors": self.auroc_rue_errors,
            "not_at_a_minimum": float(self.n_negative),
        }


@dataclasses.dataclass
class ClaimResult:
    """A claim's per-seed values, their mean ± std, and the verdict (None = not settled)."""

    text: str
    quantity: str
    threshold_true: float
    threshold_false: float
    values: list[float]
    summary: MeanStd
    verdict: bool | None


@dataclasses.dataclass
class DemoResults:
    """results.json: the seeds, every number as mean and std over them, the per-seed values,
    and the conclusions {claim: true / false / null (not settled)}."""

    seeds: list[int]
    size: str
    numbers: dict[str, MeanStd]
    conclusions: dict[str, bool | None]
    claims: dict[str, ClaimResult]
    per_seed: list[SeedResult]
    machine: dict
    seconds: dict[str, float]


def _nan_auroc(neg, pos) -> float:
    if len(neg) == 0 or len(pos) == 0:
        return math.nan
    return tb.auroc(neg, pos)


def _one_seed(seed: int, cfg: dict, *, progress) -> tuple[SeedResult, dict]:
    """Data, training and the whole analysis for one seed: (numbers, what the figures need)."""
    sp = ssh_splits(seed=seed, n_per_split=cfg["n_eval"], w_ood=W_SETS)
    idx = torch.linspace(0, cfg["n_eval"] - 1, cfg["n_train"]).round().long()
    x_tr, y_tr, v_tr = sp.train.images[idx], sp.train.y[idx], sp.train.v[idx]
    sets = dict(zip(SET_NAMES, [sp.test, *[sp.ood[float(w)] for w in W_SETS]]))
    model = SSHCNN(seed=seed)
    _, history = train(
        model,
        x_tr,
        y_tr,
        epochs=cfg["epochs"],
        lr=1e-2,
        batch_size=cfg["batch_size"],
        seed=seed,
        optimizer="adam",
        progress=progress,
    )
    model.eval()
    with torch.no_grad():
        logits = {k: model(d.images) for k, d in sets.items()}
    pred = {k: o.argmax(1) for k, o in logits.items()}
    acc = {k: float((pred[k] == d.y).double().mean()) for k, d in sets.items()}

    H = tb.exact_hessian(model, x_tr, y_tr, progress=progress)
    lam, _ = H.eigh()
    st = tb.choose_settings(lam)

    # misclassified disordered inputs, strongest disorder first (for influence)
    picks: list[tuple[float, int]] = []
    for w in (2.0, 1.0, 0.5):
        d, p = sp.ood[w], pred[f"W = {w:g}"]
        for i in torch.nonzero(p != d.y).flatten().tolist():
            if len(picks) < 3:
                picks.append((w, i))
    if not picks:  # everything right: take the least confident W = 2 inputs
        conf = logits["W = 2"].softmax(1).max(1).values
        picks = [(2.0, int(i)) for i in conf.argsort()[:3]]
    xt = torch.stack([sp.ood[w].images[i] for w, i in picks])
    yt = torch.stack([sp.ood[w].y[i] for w, i in picks])
    inf, rel = tb.influence_scores(
        model, (x_tr, y_tr), (xt, yt), H, st["damping_influence"], progress=progress
    )

    data = {k: (d.images, d.y) for k, d in sets.items()}
    rue_v, score_v, n_removed, _ = tb.rue_and_score(
        model,
        (x_tr, y_tr),
        data,
        H,
        st,
        seed=seed,
        n_bootstrap=cfg["n_bootstrap"],
        progress=progress,
        output_fn=tb.logit_margin,
    )
    ood_names = SET_NAMES[1:]
    wrong = torch.cat([pred[k] != sets[k].y for k in ood_names])
    rue_ood = torch.cat([rue_v[k] for k in ood_names])
    score_ood = torch.cat([score_v[k] for k in ood_names])

    xc = torch.cat([sp.test.images[:3], sp.ood[2.0].images[:3]])
    maps = cam(model, xc, "block3", upsample=True)
    with torch.no_grad():
        pc = model(xc).argmax(1)

    result = SeedResult(
        seed=seed,
        accuracy=acc,
        final_train_loss=history[-1],
        lambda_max=st["lambda_max"],
        lambda_min=st["lambda_min"],
        trace=st["trace"],
        n_negative=st["n_negative"],
        damping_influence=st["damping_influence"],
        damping_rue=st["damping_rue"],
        score_threshold=st["score_threshold"],
        n_removed=n_removed,
        rue_median={k: float(v.median()) for k, v in rue_v.items()},
        score_median={k: float(v.median()) for k, v in score_v.items()},
        auroc_score_shift=tb.auroc(score_v["W = 0 (test)"], score_v["W = 2"]),
        auroc_rue_shift=tb.auroc(rue_v["W = 0 (test)"], rue_v["W = 2"]),
        auroc_score_errors=_nan_auroc(score_ood[~wrong], score_ood[wrong]),
        auroc_rue_errors=_nan_auroc(rue_ood[~wrong], rue_ood[wrong]),
        n_ood_errors=int(wrong.sum()),
        hessian_seconds=float(H.info.get("seconds", math.nan)),
    )
    artifacts = dict(
        splits=sp,
        x_tr=x_tr,
        y_tr=y_tr,
        v_tr=v_tr,
        lam=lam,
        H=H,
        picks=picks,
        inf=inf,
        rel=rel,
        pred=pred,
        rue_v=rue_v,
        score_v=score_v,
        xc=xc,
        maps=maps,
        pc=pc,
    )
    return result, artifacts


def summarise(per_seed: list[SeedResult], *, size: str, seconds: dict[str, float]) -> DemoResults:
    """Mean ± std of every number over the seeds, and each claim's verdict."""
    numbers: dict[str, MeanStd] = {}
    for k in SET_NAMES:
        numbers[f"accuracy {k}"] = mean_std(r.accuracy[k] for r in per_seed)
        numbers[f"median RUE {k}"] = mean_std(r.rue_median[k] for r in per_seed)
        numbers[f"median extrapolation score {k}"] = mean_std(r.score_median[k] for r in per_seed)
    for field in (
        "final_train_loss",
        "lambda_max",
        "lambda_min",
        "trace",
        "n_negative",
        "damping_influence",
        "damping_rue",
        "score_threshold",
        "n_removed",
        "auroc_score_shift",
        "auroc_rue_shift",
        "auroc_score_errors",
        "auroc_rue_errors",
        "n_ood_errors",
        "hessian_seconds",
    ):
        numbers[field] = mean_std(getattr(r, field) for r in per_seed)
    claims = {}
    for c in CLAIMS:
        values = [r.claim_values()[c.name] for r in per_seed]
        claims[c.name] = ClaimResult(
            text=c.true_text,
            quantity=c.quantity,
            threshold_true=c.above,
            threshold_false=c.below,
            values=values,
            summary=mean_std(values),
            verdict=settle(values, above=c.above, below=c.below),
        )
    return DemoResults(
        seeds=[r.seed for r in per_seed],
        size=size,
        numbers=numbers,
        conclusions={name: cr.verdict for name, cr in claims.items()},
        claims=claims,
        per_seed=per_seed,
        machine=machine(),
        seconds=seconds,
    )


def run_ssh_demo(
    out="hessext-report",
    *,
    size: str = "default",
    seed: int = 0,
    n_seeds: int = N_SEEDS,
    progress: bool | None = None,
    quiet: bool = False,
):
    """``hessext demo``: the whole toolbox on SSH phase classifiers of seeds seed .. seed +
    n_seeds - 1, as a report folder with results.json. Returns (path, timer)."""
    if size not in SIZES:
        raise ValueError(f"run_ssh_demo: size must be one of {sorted(SIZES)}, got {size!r}")
    if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
        raise ValueError(f"run_ssh_demo: n_seeds must be a positive int, got {n_seeds!r}")
    cfg = SIZES[size]
    seeds = list(range(seed, seed + n_seeds))
    timer = StageTimer(n_seeds + 1, quiet=quiet)
    title = "hessext demo: Hessian-based analysis of SSH phase classifiers"
    with Report(out, title) as rep:
        per_seed, first = [], None
        for s in seeds:
            with timer.stage(f"seed {s}: data, training, exact Hessian, influence, RUE, score, CAM"):
                result, artifacts = _one_seed(s, cfg, progress=progress)
            per_seed.append(result)
            if first is None:
                first = artifacts
            else:  # keep only what the pooled figures need from the other seeds
                first.setdefault("others", []).append({k: artifacts[k] for k in ("lam", "rue_v", "score_v")})
        assert first is not None
        with timer.stage("figures and report"):
            results = summarise(per_seed, size=size, seconds=dict(timer.timings))
            _write(rep, results, first, cfg)
            rep.heading("Timings (seconds)")
            rep.table(["stage", "seconds"], timer.table())
            results.seconds = dict(timer.timings) | {"total": timer.total}
            write_json(rep.tmp / "results.json", results)
            path = rep.finish()
    return path, timer


# ------------------------------------------------------------------------------------ report


def _effect(score) -> str:
    return "helped" if float(score) > 0 else "harmed"


def _img_caption(d, i, pred=None):
    text = f"v={float(d.v[i]):.2f} W={float(d.W[i]):g}\nlabel {STATE_NAMES[int(d.y[i])]}"
    if pred is not None:
        text += f"\npred {STATE_NAMES[int(pred)]}"
    return text


def _verdict_text(name: str, cr: ClaimResult) -> str:
    claim = next(c for c in CLAIMS if c.name == name)
    values = ", ".join(f"{v:.3g}" for v in cr.values)
    if cr.verdict is True:
        head = f"**{claim.true_text}**"
    elif cr.verdict is False:
        head = f"**{claim.false_text}**"
    else:
        head = f"*not settled*: {claim.true_text}?"
    return (
        f"- {head} — {claim.quantity}: {cr.summary} (per seed {values}; true if all > {claim.above:g}, "
        f"false if all < {claim.below:g})"
    )


def _pooled(first: dict, key: str) -> dict[str, torch.Tensor]:
    """A per-set quantity pooled over all seeds."""
    parts = [first[key]] + [o[key] for o in first.get("others", [])]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _write(rep, res: DemoResults, first: dict, cfg: dict) -> None:
    n = len(res.seeds)
    num = res.numbers
    H, sp, x_tr, y_tr, v_tr = first["H"], first["splits"], first["x_tr"], first["y_tr"], first["v_tr"]
    s0 = res.seeds[0]
    rep.text(
        "The disordered Su–Schrieffer–Heeger chain (50 sites): each input is the 50×50 image "
        "|ψ_i(j)|² of the open chain's eigenstates (site j down, eigenstate i across, sorted by "
        "energy); the label is the winding number (topological or trivial). A CNN with "
        f"BatchNorm ({H.num_params:,} parameters) is trained on clean chains (disorder W = 0) "
        "away from the transition v = 1, then asked about disordered chains it never saw. "
        "Everything below comes from the exact Hessian of its training loss "
        "(mean cross-entropy, BatchNorm in eval mode). "
        f"The whole analysis is repeated for {n} seeds ({', '.join(map(str, res.seeds))}: each its "
        "own data, initialisation and training); numbers are mean ± standard deviation over the "
        "seeds, and a conclusion is stated only when it holds for every seed."
    )
    rep.heading("Conclusions")
    rep.text("\n".join(_verdict_text(name, cr) for name, cr in res.claims.items()))

    rep.heading("Setup")
    rep.table(
        ["item", "value"],
        [
            ["seeds", ", ".join(map(str, res.seeds))],
            ["size preset", res.size],
            [
                "training set",
                f"{len(y_tr)} images at W = 0, v ∈ [0, 0.8] ∪ [1.2, 2] "
                f"({int(y_tr.sum())} topological for seed {s0})",
            ],
            ["evaluation sets", f"{cfg['n_eval']} images each, v ~ U[0, 2], W ∈ {{0, 0.15, 0.5, 1, 2}}"],
            [
                "training",
                f"Adam lr 0.01, batch {cfg['batch_size']}, {cfg['epochs']} epochs (a demo recipe that "
                f"trains in seconds; `hessext reproduce ssh` uses the paper's), final training loss "
                f"{num['final_train_loss']}",
            ],
            [
                "Hessian",
                f"exact, dense {H.num_params}×{H.num_params}, float64 accumulation of float32 "
                f"model products, {num['hessian_seconds']} s",
            ],
            [
                "machine",
                f"{res.machine['cpu']}, {res.machine['cpu_count']} CPUs, {res.machine['torch_threads']} "
                f"torch thread(s), load average {res.machine['load_average']}",
            ],
        ],
    )
    rep.table(
        ["set", "accuracy (mean ± std)", "critical v_c(W)"],
        [[k, str(num[f"accuracy {k}"]), f"{critical_v(w):.3f}"] for k, w in zip(SET_NAMES, [0.0, *W_SETS])],
    )

    rep.heading("Hessian spectrum")
    lam = first["lam"]
    st = tb.choose_settings(lam)
    rep.figure(
        F.spectrum(
            lam,
            damping=st["damping_influence"],
            threshold=st["score_threshold"],
            title=f"Exact Hessian of the SSH CNN's training loss (P = {H.num_params}, seed {s0})",
        ),
        "spectrum",
        f"All {H.num_params} eigenvalues of seed {s0}, largest first, on a symmetric-log axis (linear in "
        "the grey band around 0). Red points are negative: the trained network is not at a minimum in "
        f"those directions (over the seeds: {num['n_negative']} negative eigenvalues), so influence uses a "
        f"damping δ > |λ_min| (dashed; δ = {num['damping_influence']} over the seeds). The dotted line is "
        "the extrapolation-score threshold.",
    )
    rep.table(
        ["quantity (mean ± std over seeds)", "value"],
        [
            ["P (parameters)", f"{H.num_params:,}"],
            ["λ_max", str(num["lambda_max"])],
            ["λ_min", str(num["lambda_min"])],
            ["negative eigenvalues (λ < −1e-6·max|λ|)", str(num["n_negative"])],
            ["trace", str(num["trace"])],
            [
                "damping δ for influence / RelatIF (δ > |λ_min|, ≥ 1e-3·λ_max, 1/2/5×10^k)",
                str(num["damping_influence"]),
            ],
            ["damping δ for RUE (≥ 2 % of λ_max)", str(num["damping_rue"])],
            ["extrapolation-score threshold t (1 % of λ_max)", str(num["score_threshold"])],
            ["top eigen-directions removed for the score", str(num["n_removed"])],
        ],
    )

    rep.heading("Influence and RelatIF: which training images explain a mistake?")
    inf, rel, picks, pred = first["inf"], first["rel"], first["picks"], first["pred"]
    rows, labels = [], []
    for t, (w, i) in enumerate(picks):
        d = sp.ood[w]
        for name, scores in (("influence", inf), ("RelatIF", rel)):
            s = scores[:, t]
            help_i = s.argsort(descending=True)[:3].tolist()
            harm_i = s.argsort()[:3].tolist()
            row = [(d.images[i, 0], "test input\n" + _img_caption(d, i, pred[f"W = {w:g}"][i]))]
            # the label follows the sign: when no training image helped, the "most helpful"
            # column holds the least harmful ones, and the title must not claim they helped
            row += [
                (
                    x_tr[j, 0],
                    f"{_effect(s[j])} {name}\n{float(s[j]):+.2g}, "
                    f"v={float(v_tr[j]):.2f}\n{STATE_NAMES[int(y_tr[j])]}",
                )
                for j in help_i + harm_i
            ]
            rows.append(row)
            labels.append(f"{name}")
    rep.figure(
        F.image_rows(
            rows,
            row_labels=labels,
            title="Most helpful and most harmful training images for misclassified disordered inputs "
            f"(seed {s0})",
        ),
        "influence",
        "Each row: a disordered test input the model of the first seed gets wrong (left, with its true "
        "label and the prediction), then the three training images whose removal would most INCREASE its "
        "loss (largest score) and the three whose removal would most DECREASE it (smallest score); each "
        "is labelled by its sign: helped (positive) or harmed (negative). Influence IF = (1/n) g_testᵀ "
        "(H + δI)⁻¹ g_train; RelatIF divides by ‖(H + δI)⁻¹ g_train‖ so that examples with huge, generic "
        f"gradients do not dominate. Damping δ = {st['damping_influence']:g}.",
    )

    rep.heading("Uncertainty and out-of-distribution detection as functions of disorder")
    pos = [0.0, *W_SETS]
    rue_all, score_all = _pooled(first, "rue_v"), _pooled(first, "score_v")
    rep.figure(
        F.per_set_distribution(
            rue_all,
            positions=pos,
            xlabel="disorder strength W",
            ylabel="RUE: variance of the logit margin\nover bootstrap models",
            title=f"RUE vs disorder ({n} seeds pooled)",
        ),
        "rue_vs_W",
        f"RUE (resampling uncertainty): {cfg['n_bootstrap']} bootstrap resamples of the training "
        "set, each model obtained by one Newton step θ_b = θ − (H + δI)⁻¹ Gᵀ(w_b − 1)/n; the value is "
        "the variance over b of the logit margin f_topological − f_trivial. (The variance of the class "
        "probabilities, the toolbox's choice, is ~1e-10 for a confident network: a saturated softmax "
        "measures the margin, not the uncertainty.) Inputs of all seeds pooled; training data at W = 0.",
    )
    rep.figure(
        F.per_set_distribution(
            score_all,
            positions=pos,
            xlabel="disorder strength W",
            ylabel="extrapolation score ‖U⊥ᵀ g(x)‖",
            title=f"Local-ensemble extrapolation score vs disorder ({n} seeds pooled)",
        ),
        "score_vs_W",
        "Extrapolation score of local ensembles: the norm of the prediction gradient g(x) (predicted-class "
        "logit) outside the top-curvature directions of H (eigenvalues > t = 1 % of λ_max). Large values: "
        "the training data do not constrain this prediction.",
    )
    rep.figure(
        F.ood_histogram(
            first["score_v"]["W = 0 (test)"],
            first["score_v"]["W = 2"],
            auroc=tb.auroc(first["score_v"]["W = 0 (test)"], first["score_v"]["W = 2"]),
            clean_label="clean test (W = 0)",
            shifted_label="disordered (W = 2)",
            xlabel="extrapolation score",
            title=f"Does the score flag disordered inputs? (seed {s0})",
        ),
        "score_ood",
        f"AUROC over the seeds: extrapolation score {num['auroc_score_shift']}, RUE {num['auroc_rue_shift']} "
        "(the probability that a random W = 2 input gets a higher value than a random clean one; rank-sum "
        "formula, ties counted half; 0.5 is chance).",
    )
    rep.table(
        ["set", "median RUE", "median score"],
        [[k, str(num[f"median RUE {k}"]), str(num[f"median extrapolation score {k}"])] for k in SET_NAMES],
    )
    rep.text(
        f"**AUROC clean vs W = 2** (mean ± std over {n} seeds): extrapolation score "
        f"{num['auroc_score_shift']}, RUE {num['auroc_rue_shift']}. **AUROC for the disordered inputs "
        f"the network gets wrong** ({num['n_ood_errors']} errors per seed): extrapolation score "
        f"{num['auroc_score_errors']}, RUE {num['auroc_rue_errors']}."
    )

    rep.heading("Class activation maps")
    xc, maps, pc = first["xc"], first["maps"], first["pc"]
    caps = []
    for k in range(len(xc)):
        d = sp.test if k < 3 else sp.ood[2.0]
        caps.append(_img_caption(d, k % 3, pc[k]))
    rep.figure(
        F.cam_panels(
            [x[0] for x in xc],
            [m for m in maps],
            caps,
            title=f"CAM over the last conv block: clean (left 3) vs W = 2 (right 3), seed {s0}",
        ),
        "cam",
        "Top: inputs; bottom: the class activation map Σ_k w_ck A_k(j, i) of the predicted class c "
        "(last conv block, upsampled to 50×50) minus its mean over the image (the mean plus the "
        "head's bias is the logit). Red regions carry more evidence for the predicted class than "
        "average, blue less; each map has its own colour range. Compare where the evidence sits "
        "for clean chains (extended states) and for W = 2 (localised states).",
    )
