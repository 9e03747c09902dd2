"""``hessext reproduce ssh``: the disordered-SSH population study (Cybiński et al. 2024), end to
end — K networks trained alike, their out-of-distribution generalisation, CAMs, activation
clustering, and the Hessian-based signals that might tell good generalisers from bad ones
(docs/ssh-study.md).

Every finished network is a cached piece of the work folder (``cache/model-<seed>.pt``,
fingerprinted by the protocol, the seed and the analysis version), so a rerun — also with more
networks — trains only the missing ones. ``--jobs J`` trains J networks at a time in worker
processes (one torch thread each by default), each saving its network as soon as it is done.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import math
import multiprocessing
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from hessext._internal.progress import progress_bar
from hessext._version import __version__
from hessext.apps import ssh_figures as SF
from hessext.apps import ssh_study as S
from hessext.apps.arguments import int_at_least
from hessext.reporting.report import UserError
from hessext.reporting.results import write_json
from hessext.reporting.stats import Correlation
from hessext.reporting.workdir import WorkDir, fingerprint_of

try:  # the CPU time of finished worker processes (POSIX only)
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

NAME = "ssh"
HELP = (
    "the disordered-SSH study: K CNNs trained alike, their OOD generalisation, CAMs, "
    "activation clustering and Hessian signals (default 100 networks; --quick 10)"
)
# Bump when the per-network analysis changes: cached networks of an older analysis are redone.
ANALYSIS_VERSION = 1
TITLE = "hessext reproduce ssh: out-of-distribution generalisation of SSH phase classifiers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--models K and --jobs J (the common options are added by hessext/cli.py)."""
    parser.add_argument(
        "--models",
        type=int_at_least(3),
        default=None,
        help="networks K, seeds S..S+K-1 for --seed S (default 100; 10 with --quick)",
    )
    parser.add_argument(
        "--jobs",
        type=int_at_least(1),
        default=max(1, min(2, os.cpu_count() or 1)),
        help="networks trained at a time, in worker processes (default: 2, or 1 on one CPU)",
    )


@dataclasses.dataclass
class RunInfo:
    """How this run went: which networks it computed and which it found finished in the work
    folder, its wall and CPU seconds (main process plus finished worker processes), the mean
    per-stage seconds of the networks it computed, and the machine before and after."""

    computed: list[int]
    reused: list[int]
    jobs: int
    threads_per_job: int
    wall_seconds: float
    cpu_seconds: float
    model_seconds_mean: dict[str, float]
    model_cpu_seconds_mean: dict[str, float]
    umap: str
    machine_start: dict
    machine_end: dict


@dataclasses.dataclass
class StudyResults:
    """results.json: the protocol, every network's measurements, the population's statistics,
    the paper's published numbers beside them, and how the run went."""

    study: str
    hessext: str
    protocol: dict
    seeds: list[int]
    models: list[S.ModelResult]
    population: S.Population
    paper: dict
    run: RunInfo


# ------------------------------------------------------------------------------ the networks


def _key(seed: int) -> str:
    return f"model-{seed}"


def _fingerprint(protocol: S.Protocol, seed: int) -> str:
    return fingerprint_of("ssh-model", ANALYSIS_VERSION, __version__, dataclasses.asdict(protocol), seed)


def _load(wd: WorkDir, protocol: S.Protocol, seed: int):
    """(ModelResult, artifacts) of a finished network, or None."""
    stored = wd.load(_key(seed), _fingerprint(protocol, seed))
    if stored is None:
        return None
    try:
        return S.ModelResult(**stored["result"]), stored["artifacts"]
    except (TypeError, KeyError):  # written by another version of the analysis: redo it
        return None


def _compute_and_store(wd: WorkDir, protocol: S.Protocol, data: S.StudyData, seed: int, progress) -> None:
    result, artifacts = S.analyse_model(seed, protocol, data, progress=progress)
    wd.save(
        _key(seed),
        _fingerprint(protocol, seed),
        {"result": dataclasses.asdict(result), "artifacts": artifacts},
    )


_WORKER: dict = {}


def _init_worker(protocol: S.Protocol, root: str, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["protocol"] = protocol
    _WORKER["wd"] = WorkDir(root, "ssh")
    _WORKER["data"] = S.make_data(protocol)


def _work(seed: int) -> int:
    _compute_and_store(_WORKER["wd"], _WORKER["protocol"], _WORKER["data"], seed, progress=False)
    return seed


def _train_missing(wd, protocol, todo, *, jobs, threads, progress) -> None:
    if not todo:
        return
    bar = progress_bar(total=len(todo), desc="networks", unit="net", progress=progress)
    try:
        if jobs == 1 or len(todo) == 1:
            data = S.make_data(protocol)
            for seed in todo:
                _compute_and_store(wd, protocol, data, seed, progress=False)
                bar.update(1)
            return
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch state
        with cf.ProcessPoolExecutor(
            max_workers=min(jobs, len(todo)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(protocol, str(wd.root), threads),
        ) as pool:
            for future in cf.as_completed([pool.submit(_work, s) for s in todo]):
                future.result()  # a failed network raises here; finished ones stay cached
                bar.update(1)
    finally:
        bar.close()


# ------------------------------------------------------------------------------------ the run


def run(args) -> Path:
    """The CLI entry (hessext/apps/reproduce/__init__.py): returns the report folder."""
    protocol = S.PROTOCOLS["quick" if args.quick else "full"]
    n_models = args.models if args.models is not None else protocol.models
    path, _ = run_study(
        args.out,
        protocol,
        n_models=n_models,
        first_seed=args.seed,
        jobs=args.jobs,
        progress=False if args.no_progress else None,
    )
    return path


def run_study(
    out,
    protocol: S.Protocol,
    *,
    n_models: int,
    first_seed: int = 0,
    jobs: int = 1,
    progress: bool | None = None,
    umap: bool = True,
) -> tuple[Path, StudyResults]:
    """Train and measure networks first_seed .. first_seed + n_models - 1 (those the work folder
    ``out`` does not hold yet), then write DIR/report. umap=False skips the UMAP panels (numba
    compiles UMAP for ~20 s in every fresh process). Returns (report folder, results)."""
    if n_models < 3:
        raise UserError(f"--models {n_models}: the population statistics need at least 3 networks")
    t0, c0, children0 = time.perf_counter(), time.process_time(), _children_cpu_seconds()
    start = S.machine()
    wd = WorkDir(out, "ssh")  # claims the folder (or refuses it) before any heavy work
    seeds = list(range(first_seed, first_seed + n_models))
    todo = [s for s in seeds if _load(wd, protocol, s) is None]
    threads = max(1, torch.get_num_threads() // jobs) if jobs > 1 else torch.get_num_threads()
    _train_missing(wd, protocol, todo, jobs=jobs, threads=threads, progress=progress)

    loaded = {s: _load(wd, protocol, s) for s in seeds}
    missing = [s for s, v in loaded.items() if v is None]
    if missing:
        raise RuntimeError(f"reproduce ssh: networks {missing} were computed but could not be read back")
    models = [loaded[s][0] for s in seeds]
    computed = [m for m in models if m.seed in todo]

    def mean_stage(attr):
        stages = computed[0].seconds if computed else {}
        return {k: float(np.mean([getattr(m, attr)[k] for m in computed])) for k in stages}

    run_info = RunInfo(
        computed=todo,
        reused=[s for s in seeds if s not in todo],
        jobs=jobs,
        threads_per_job=threads,
        wall_seconds=0.0,
        cpu_seconds=0.0,
        model_seconds_mean=mean_stage("seconds"),
        model_cpu_seconds_mean=mean_stage("cpu_seconds"),
        umap=_umap_version() if umap else "skipped",
        machine_start=start,
        machine_end={},
    )
    results = StudyResults(
        study="ssh",
        hessext=__version__,
        protocol=dataclasses.asdict(protocol),
        seeds=seeds,
        models=models,
        population=S.population(models),
        paper=S.PAPER,
        run=run_info,
    )
    with wd.report(TITLE) as rep:
        _write_report(
            rep, results, protocol, {s: v[1] for s, v in loaded.items() if v is not None}, umap=umap
        )
        run_info.wall_seconds = time.perf_counter() - t0
        run_info.cpu_seconds = time.process_time() - c0 + _children_cpu_seconds() - children0
        run_info.machine_end = S.machine()
        rep.table(
            ["", "value"],
            [
                ["networks computed / reused", f"{len(todo)} / {len(seeds) - len(todo)}"],
                ["wall seconds", f"{run_info.wall_seconds:.0f}"],
                ["CPU seconds (all processes)", f"{run_info.cpu_seconds:.0f}"],
                ["jobs × threads", f"{jobs} × {threads}"],
                [
                    "load average at start / end",
                    f"{start['load_average']} / {run_info.machine_end['load_average']}",
                ],
            ],
        )
        write_json(rep.tmp / "results.json", results)
        path = rep.finish()
    return path, results


def _umap_version() -> str:
    try:
        return f"umap-learn {version('umap-learn')}"
    except PackageNotFoundError:
        return "not installed"


def _children_cpu_seconds() -> float:
    if resource is None:
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _umap_embedding(gap: torch.Tensor, n_fit: int, seed: int):
    """UMAP (n_neighbors 30, min_dist 0, euclidean, 2-D: the paper's) fitted on the first n_fit
    rows (the clean test set) and applied to all; None without umap-learn."""
    try:
        import umap
    except ImportError:
        return None
    x = gap.double().numpy()
    reducer = umap.UMAP(
        n_neighbors=30, min_dist=0.0, n_components=2, metric="euclidean", random_state=seed, n_jobs=1
    )
    reducer.fit(x[:n_fit])
    return reducer.transform(x)


# --------------------------------------------------------------------------------- the report


def _fmt(x, digits=3) -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _corr(c: Correlation) -> str:
    if not math.isfinite(c.rho):
        return "n/a"
    return f"{c.rho:+.2f} [{c.low:+.2f}, {c.high:+.2f}]"


def _write_report(rep, res: StudyResults, protocol: S.Protocol, artifacts: dict, *, umap: bool) -> None:
    models, pop, paper = res.models, res.population, res.paper
    acc = np.array([m.map_accuracy for m in models])
    best = models[int(acc.argmax())]
    worst = models[int(acc.argmin())]
    rec = protocol.recipe
    rep.text(
        "Cybiński et al. (2024) trained 100 identical CNNs on clean disordered-SSH images "
        "(W = 0, away from the transition) and found that they generalise to disordered chains very "
        "differently. This report repeats their study — the same data design, architecture and "
        "recipe, one network per seed — and asks which per-network signal, from their "
        "interpretation tools (CAM focus, map similarity, activation clustering) and from the "
        "Hessian (trace, λ_max, extrapolation score, RUE), tells good generalisers from bad ones. "
        "OOD accuracy is the accuracy over the whole generalisation map (W from 0 to "
        f'{protocol.map_w_max:g}, v from 0 to 2), the paper\'s "Accuracy".'
    )
    rep.heading("Setup")
    rep.table(
        ["item", "value"],
        [
            ["protocol", f"{protocol.name} ({len(models)} networks, seeds {res.seeds[0]}–{res.seeds[-1]})"],
            [
                "data",
                f"train {protocol.n_train} at W = 0 + {protocol.n_perturb} each at W = 0.01, 0.05; "
                f"val {protocol.n_val} + {protocol.n_perturb} each; test {protocol.n_test} per W ∈ "
                f"{{0, 0.15, 0.5, 1, 2}}",
            ],
            [
                "recipe",
                f"{rec.optimizer.upper()} lr {rec.lr:g}, momentum {rec.momentum:g}, weight decay "
                f"{rec.weight_decay:g}, batch {rec.batch_size}, ≤ {rec.max_epochs} epochs, plateau stop "
                f"{rec.early_stopping}",
            ],
            [
                "generalisation map",
                f"{protocol.map_n_w} W × {protocol.map_n_v} v × {protocol.map_realisations} realisations; "
                f"targets from {protocol.target_realisations} realisations",
            ],
            [
                "curvature",
                f"exact Hessian on {protocol.n_hessian} evenly spaced training images; RUE with "
                f"B = {protocol.n_bootstrap} of the logit margin",
            ],
            ["machine", f"{res.run.machine_start['cpu']}, {res.run.machine_start['cpu_count']} CPUs"],
        ],
    )

    rep.heading("How well the population generalises")
    topo_med = float(np.median([m.map_topological_recall for m in models]))
    triv_med = float(np.median([m.map_trivial_recall for m in models]))
    rep.table(
        ["OOD accuracy", "here", "paper (100 CNNs)"],
        [
            ["networks", pop.n_models, paper["n_models"]],
            ["mean", _fmt(pop.ood_accuracy_mean), paper["ood_accuracy_mean"]],
            ["median", _fmt(pop.ood_accuracy_median), paper["ood_accuracy_median"]],
            [
                "min / max",
                f"{pop.ood_accuracy_min:.3f} / {pop.ood_accuracy_max:.3f}",
                f"{paper['ood_accuracy_min']} / {paper['ood_accuracy_max']}",
            ],
            ["above 0.8", f"{pop.above_0_8}/{pop.n_models}", f"{paper['above_0_8']}/100"],
            ["below 0.6", f"{pop.below_0_6}/{pop.n_models}", f"{paper['below_0_6']}/100"],
            [
                "median topological / trivial recall",
                f"{topo_med:.3f} / {triv_med:.3f}",
                f"{paper['topological_recall_median']} / {paper['trivial_recall_median']}",
            ],
            ["mean in-distribution F1", _fmt(pop.id_f1_mean), "1.00 (demo model)"],
        ],
    )
    rep.figure(
        SF.accuracy_histogram(
            acc,
            paper_median=paper["ood_accuracy_median"],
            paper_above=paper["above_0_8"],
            paper_n=paper["n_models"],
        ),
        "ood_accuracy_histogram",
        "OOD accuracy of every network (accuracy over the generalisation map) with the median here "
        "and in the paper. The spread, not the mean, is the paper's finding: networks trained "
        "alike differ in how they extrapolate.",
    )
    rep.table(
        ["disordered test set", *pop.ood_set_accuracy_mean],
        [["mean accuracy", *[f"{v:.3f}" for v in pop.ood_set_accuracy_mean.values()]]],
    )

    grid_v, grid_w, target = S.map_target(protocol)
    maps = {
        f"best: seed {best.seed} (OOD acc {best.map_accuracy:.3f}, SSIM {best.ssim:.2f})": artifacts[
            best.seed
        ]["map"],
        f"worst: seed {worst.seed} (OOD acc {worst.map_accuracy:.3f}, SSIM {worst.ssim:.2f})": artifacts[
            worst.seed
        ]["map"],
    }
    rep.figure(
        SF.generalisation_maps(target, maps, grid_v=grid_v, grid_w=grid_w),
        "generalisation_maps",
        "Target phase diagram (fraction of topological realisations, closed-form winding labels) and "
        "the fraction of inputs the best and the worst network call topological, over v × W. Dashed: "
        "the disorder-averaged critical line v_c(W). The paper's poor generalisers call disordered "
        "trivial chains topological (a topological region that spreads to large v).",
    )

    rows = []
    for tag, m in (("best", best), ("worst", worst)):
        ex = artifacts[m.seed]["examples"]
        panels = []
        for k in range(len(ex["index"])):
            pred = "topological" if int(ex["pred"][k]) == 1 else "trivial"
            panels += [
                (ex["x"][k], f"input v = {float(ex['v'][k]):.3f}"),
                (ex["cam"][k], f"CAM ({pred})"),
                (ex["grad_cam"][k], f"grad-CAM ({pred})"),
            ]
        rows.append((f"{tag}: seed {m.seed}\nCAM focus {m.cam_focus:.2f}", panels))
    rep.figure(
        SF.cam_grid(rows, edge_columns=S.EDGE_COLUMNS, edge_rows=S.EDGE_ROWS),
        "cams",
        "Clean test inputs (v ≈ 0.106, the paper's Fig. 2 sample, and v ≈ 1.5) and the CAM and grad-CAM "
        "of the predicted class over the last conv block, upsampled to 50×50, for the best and the "
        "worst network. Dotted: the edge-state region (eigenstates 23–26, sites 0–1 and 48–49). "
        "CAM focus = mean of the min–max normalised topological-class CAM over that region ÷ its "
        "mean over the image, averaged over the clean topological test inputs (1: no preference).",
    )

    n_test = protocol.n_test
    emb_rows = [
        (f"{tag} (seed {m.seed})", artifacts[m.seed]["gap_pca"])
        for tag, m in (("best", best), ("worst", worst))
    ]
    labels, set_w = artifacts[best.seed]["labels"], artifacts[best.seed]["set_w"]
    rep.figure(
        SF.embedding_panels(emb_rows, labels, set_w, kind="PCA"),
        "pca_gap",
        "PCA of the 9 global-average-pool activations, fitted on the clean test set and applied to the "
        "disordered test sets (the paper's Fig. 4 protocol). Red topological, blue trivial (true labels).",
    )
    umap_rows = []
    for tag, m in (("best", best), ("worst", worst)) if umap else ():
        z = _umap_embedding(artifacts[m.seed]["gap"], n_test, seed=m.seed)
        if z is not None:
            umap_rows.append((f"{tag} (seed {m.seed})", z))
    if umap_rows:
        rep.figure(
            SF.embedding_panels(umap_rows, labels, set_w, kind="UMAP"),
            "umap_gap",
            "UMAP (n_neighbors 30, min_dist 0, euclidean; the paper's settings) of the GAP activations, "
            "fitted on the clean test set and applied to the disordered sets.",
        )
    elif umap:
        rep.text("UMAP panels skipped: umap-learn is not installed (`pip install umap-learn`).")
    layer_rows = [
        [layer]
        + [
            f"{np.mean([m.pca[layer]['explained_variance_ratio'][0] for m in models]):.2f}",  # type: ignore[index]
            f"{np.mean([m.pca[layer]['ood_pc1_separation'] for m in models]):.3f}",
        ]
        for layer in S.PCA_LAYERS
    ]
    rep.table(
        ["layer", "PC1 explained variance (mean)", "PC1 label separation on OOD sets (mean)"], layer_rows
    )

    rep.heading("Which signal tells the good generalisers from the bad?")
    rep.text(
        "Spearman rank correlation of each per-network signal with OOD accuracy across the "
        f"{len(models)} networks, with a 95 % percentile-bootstrap interval (2,000 resamples of the "
        "networks). Signals marked 'no' are computed without any label of the disordered data — "
        "those are the ones that could pick a good generaliser in practice."
    )
    rep.table(
        ["signal", "what it is", "uses OOD labels", "Spearman ρ [95 % CI]"],
        [
            [name, desc, "yes" if labelled else "no", _corr(pop.spearman[name])]
            for name, (desc, labelled) in S.SIGNALS.items()
        ],
    )
    scatter = {
        name: (np.array([S.signal_value(m, name) for m in models]), f"ρ = {_corr(pop.spearman[name])}")
        for name in S.SIGNALS
    }
    rep.figure(
        SF.signal_scatter(scatter, acc),
        "signals_vs_accuracy",
        "Each signal per network (x) against its OOD accuracy (y), with the Spearman ρ and its interval.",
    )

    rep.heading("Networks")
    ws = list(models[0].ood_accuracy)
    rep.table(
        [
            "seed",
            "epochs",
            "ID F1",
            "OOD acc",
            *[f"acc W={w}" for w in ws],
            "SSIM",
            "CAM focus",
            "trace",
            "λ_max",
            "extrap. AUROC",
            "RUE AUROC",
        ],
        [
            [
                m.seed,
                m.epochs,
                _fmt(m.id_f1),
                _fmt(m.map_accuracy),
                *[_fmt(m.ood_accuracy[w]) for w in ws],
                _fmt(m.ssim, 2),
                _fmt(m.cam_focus, 2),
                f"{m.trace:.3g}",
                f"{m.lambda_max:.3g}",
                _fmt(m.extrapolation_auroc),
                _fmt(m.rue_auroc),
            ]
            for m in models
        ],
    )
    if res.run.model_seconds_mean:
        rep.heading("Timings")
        rep.table(
            ["stage (per network, mean)", "wall s", "CPU s"],
            [
                [k, f"{v:.1f}", f"{res.run.model_cpu_seconds_mean[k]:.1f}"]
                for k, v in res.run.model_seconds_mean.items()
            ],
        )
