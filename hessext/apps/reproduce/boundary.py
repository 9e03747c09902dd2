"""``hessext reproduce boundary``: Sabanayagam, Behrens, Adomaityte & Dawid, "Unveiling the
Hessian's Connection to the Decision Boundary" (arXiv 2306.07104), every experiment from config
to figure, seeded and averaged over seeds (docs/boundary-paper.md).

For every experiment of boundary_configs.EXPERIMENTS and every seed: train (the fused MLP loop,
hessext.training.train_mlps, or hessext.training.train for the CNN), assemble the exact
Hessian of the mean training loss, find all its eigenpairs with λ ≠ 0
(hessext.curvature.range_eigh), count the outliers, compute G_θ over all eigenvectors, tr(H),
λ_1, and the figure data (hessext/apps/boundary_study.py). Then the paper's claims are checked
seed by seed, and the report (figures, report.md, report.html, results.json) is written from
one typed results object (BoundaryResults).

Resumable: DIR/cache holds each trained model, spectrum and map set with the fingerprint of
what it was computed from (config, seed, data, the model it started from, hessext version);
a rerun reuses every piece that matches and computes only the rest. The dense Hessian itself
(0.9 GB for P = 10,703, assembled in seconds) is not stored; its spectrum is.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hessext._version import __version__
from hessext.apps import boundary_study as study
from hessext.apps.reproduce import boundary_configs as configs
from hessext.apps.reproduce.boundary_report import write_report
from hessext.datasets import digits
from hessext.reporting.report import UserError
from hessext.reporting.results import MeanStd, mean_std, write_json
from hessext.reporting.workdir import WorkDir, fingerprint_of
from hessext.training import train, train_mlps

NAME = "boundary"
HELP = (
    "Sabanayagam et al. 2023, the Hessian and the decision boundary: every experiment (spectra, "
    "outliers, alignment maps, G_θ, margins), seeded and averaged over seeds"
)

PAPER = "Sabanayagam, Behrens, Adomaityte, Dawid, arXiv 2306.07104 (2023)"

# The paper's published numbers (committed figures and notes of its repository, training
# unseeded: expect ±30 %; docs/boundary-paper.md).
PUBLISHED: dict[str, dict[str, Any]] = {
    "gauss_normal": {"top_eigenvalues": [0.154, 0.023, 0.009, 0.006, 0.005, 0.002, 0.002], "outliers": 2},
    "gauss_adversarial_init": {"outliers": "3 (histogram figure; another run shows 0.003, 0.001, 0.001)"},
    "gauss_large_norm": {"outliers": 1, "top_eigenvalues": [0.016]},
    "hierarchical_normal": {"trace": 13.287, "top_eigenvalues": [7.3, 5.6], "parameter_norm": 9.9988},
    "digits017_normal": {
        "top_eigenvalues": [5.092, 2.299, 1.422, 0.627, 0.353],
        "train_accuracy": 1.0,
        "note": "MNIST-017 (the paper's data); built-in digits are a stand-in",
    },
    "digits017_adversarial_init": {"top_eigenvalues": [15.025, 2.073, 1.039, 0.607, 0.554]},
    "intro1d_normal": {"top_eigenvalues": [11.2, 0.7]},
}

# (complex boundary, simple boundary) pairs of the G_θ claim, compared seed by seed
COMPLEX_SIMPLE = (
    ("gauss_adversarial_init", "gauss_normal"),
    ("checkerboard_noisy_init", "checkerboard_normal"),
    ("digits017_adversarial_init", "digits017_normal"),
)

# grid resolution, maps per model, margin steps, by protocol
_ANALYSIS = {
    "full": {"resolution": 100, "n_maps": 6, "margin_steps": 2000},
    "quick": {"resolution": 80, "n_maps": 6, "margin_steps": 400},
    "test": {"resolution": 24, "n_maps": 4, "margin_steps": 10},
}
_MARGIN_EXPERIMENTS = ("checkerboard_normal", "checkerboard_noisy_init")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--seeds, --only, --mnist."""
    parser.add_argument(
        "--seeds", type=_positive_int, default=3, help="seeds per experiment: --seed, --seed+1, … (default 3)"
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="NAME,...",
        help="comma-separated experiments (default: all): " + ", ".join(configs.EXPERIMENTS),
    )
    parser.add_argument(
        "--mnist",
        default=None,
        metavar="FILE",
        help="the original MNIST (test split) for the image experiments instead of the built-in "
        "8×8 digits; they are then named mnist017_*. " + digits.MNIST_FORMAT.split("\n")[0],
    )


# ---------------------------------------------------------------------------------------------
# typed results


@dataclass
class SeedResult:
    """One experiment at one seed. train_accuracy is on the labels the model was trained on
    (the permuted ones for random labels), test_accuracy on the true test labels;
    top_eigenvalues descending (20); g_theta over all P eigenvectors (g_theta_exact: determined
    by the eigenvectors with λ ≠ 0, see hessext.boundary.GeneralisationMeasure); margin only for
    the checkerboard pair; sign_agreement for the 2-D sets (fraction of the grid where the signs of
    a_1 … a_{C−1} name the predicted class)."""

    seed: int
    train_accuracy: float
    test_accuracy: float
    final_train_loss: float
    num_params: int
    top_eigenvalues: list[float]
    outliers: int
    trace: float
    lambda_max: float
    g_theta: float
    g_theta_epsilon: float
    g_theta_aligned: int
    g_theta_exact: bool
    margin: float | None
    sign_agreement: float | None
    parameter_norm: float
    hessian_rank: int
    eigen_method: str
    eigen_residual: float
    epochs: int
    train_seconds: float
    analysis_seconds: float


@dataclass
class ExperimentResult:
    """An experiment's resolved config, its seeds and the mean ± std of every number."""

    name: str
    config: dict
    seeds: list[SeedResult]
    summary: dict[str, MeanStd]


@dataclass
class Claim:
    """One of the paper's claims: what it says, whether it holds at each seed, the fraction."""

    statement: str
    experiments: list[str]
    holds: list[bool]
    fraction: float
    paper: str


@dataclass
class BoundaryResults:
    """Everything ``hessext reproduce boundary`` measured (what results.json is made of)."""

    paper: str
    protocol: str
    seeds: list[int]
    hessext_version: str
    outlier_rule: str
    g_theta_definition: str
    experiments: dict[str, ExperimentResult]
    claims: dict[str, float]
    claim_details: dict[str, Claim]
    published: dict[str, dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)


_SUMMARY_KEYS = (
    "train_accuracy",
    "test_accuracy",
    "lambda_max",
    "outliers",
    "trace",
    "g_theta",
    "g_theta_epsilon",
    "margin",
    "sign_agreement",
    "parameter_norm",
    "hessian_rank",
)

G_THETA_DEFINITION = (
    "G_θ = (1/P)·#{i : max_n |a_i(x_n)| ≥ ε} over all P Hessian eigenvectors and the training "
    "points x_n, a_i(x) = cos(g(x), v_i) with g the reinforcing gradient; ε = the mean over 5 "
    "seeded random unit directions r_j of max_n |cos(g(x_n), r_j)| (the paper's figures' version)"
)


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class Trained:
    """A trained model in the cache: its state dict, per-epoch training loss [epochs] (float32),
    epochs, and the wall seconds of training (shared equally when seeds trained together)."""

    state: dict
    history: torch.Tensor
    epochs: int
    seconds: float


class _Run:
    """The state of one pipeline run: configs, data, cached pieces, fingerprints."""

    def __init__(self, wd: WorkDir, protocol: str, seeds: list[int], image_source: str, mnist, progress):
        self.wd, self.protocol, self.seeds = wd, protocol, seeds
        self.image_source, self.mnist, self.progress = image_source, mnist, progress
        self._data: dict[tuple, study.Data] = {}
        self._data_fp: dict[tuple, str] = {}
        self.trained: dict[tuple[str, int], Trained] = {}
        self.model_fp: dict[tuple[str, int], str] = {}

    def cfg(self, name: str) -> dict:
        return configs.resolve(name, self.protocol, image_source=self.image_source)

    def data_of(self, name: str) -> study.Data:
        """The data set of experiment ``name`` (loaded once per data set and image count)."""
        cfg = self.cfg(name)
        key = (cfg["dataset"], cfg.get("images_per_class"))
        if key not in self._data:
            d = study.load_data(cfg["dataset"], mnist=self.mnist, images_per_class=key[1])
            self._data[key] = d
            self._data_fp[key] = fingerprint_of(d.x, d.y)
        return self._data[key]

    def data_fingerprint(self, name: str) -> str:
        cfg = self.cfg(name)
        self.data_of(name)
        return self._data_fp[(cfg["dataset"], cfg.get("images_per_class"))]

    def fingerprint(self, name: str, seed: int) -> str:
        if (name, seed) not in self.model_fp:
            cfg = self.cfg(name)
            parents = [self.fingerprint(cfg[k], seed) for k in ("init_from", "norm_from") if k in cfg]
            self.model_fp[(name, seed)] = fingerprint_of(
                "boundary-model-1", __version__, cfg, seed, self.data_fingerprint(name), parents
            )
        return self.model_fp[(name, seed)]

    def model(self, name: str, seed: int) -> torch.nn.Module:
        cfg = self.cfg(name)
        m = study.build_model(cfg["architecture"], self.data_of(name), seed)
        m.load_state_dict(self.trained[(name, seed)].state)
        return m.eval()

    def initial_model(self, name: str, seed: int) -> torch.nn.Module:
        cfg = self.cfg(name)
        data = self.data_of(name)
        m = study.build_model(cfg["architecture"], data, seed)
        if cfg["protocol"] in ("adversarial_init", "noisy_init"):
            m.load_state_dict(self.trained[(cfg["init_from"], seed)].state)
        elif cfg["protocol"] == "large_norm":
            target = study.parameter_norm(self.model(cfg["norm_from"], seed))
            scale = target / study.parameter_norm(m)
            with torch.no_grad():
                for p in m.parameters():
                    p.mul_(scale)
        return m

    def train(self, name: str) -> None:
        """Every seed's model of ``name``: from the cache, or trained (all missing seeds of an
        MLP experiment at once)."""
        cfg = self.cfg(name)
        todo = []
        for seed in self.seeds:
            got = self.wd.load(f"{name}-seed{seed}-model", self.fingerprint(name, seed))
            if got is None:
                todo.append(seed)
            else:
                self.trained[(name, seed)] = got
        if not todo:
            return
        data = self.data_of(name)
        x, y = data.split.x_train, study.training_labels(data, cfg["protocol"])
        opt = cfg["optimizer"]
        models = [self.initial_model(name, seed) for seed in todo]
        t0 = time.perf_counter()
        if cfg["architecture"]["name"] == "mlp":
            histories = train_mlps(
                models,
                x,
                y,
                epochs=cfg["epochs"],
                lr=opt["lr"],
                batch_size=opt["batch_size"],
                seeds=todo,
                progress=self.progress,
            )
        else:
            histories = []
            for m, seed in zip(models, todo):
                _, h = train(
                    m,
                    x,
                    y,
                    epochs=cfg["epochs"],
                    lr=opt["lr"],
                    batch_size=opt["batch_size"],
                    seed=seed,
                    progress=self.progress,
                )
                histories.append(h)
        seconds = (time.perf_counter() - t0) / len(todo)
        for m, seed, h in zip(models, todo, histories):
            state = {k: v.detach().clone() for k, v in m.state_dict().items()}
            piece = Trained(state, torch.tensor(h, dtype=torch.float32), cfg["epochs"], seconds)
            self.trained[(name, seed)] = self.wd.save(
                f"{name}-seed{seed}-model", self.fingerprint(name, seed), piece
            )

    def analyse(self, name: str, seed: int) -> tuple[SeedResult, study.Spectrum, study.Maps]:
        """Spectrum, G_θ and figure data of one model (cached pieces)."""
        cfg = self.cfg(name)
        data = self.data_of(name)
        model = self.model(name, seed)
        y_fit = study.training_labels(data, cfg["protocol"])
        x_train = data.split.x_train
        k_top = max(20, 10 * data.num_classes)
        fp_s = fingerprint_of(self.fingerprint(name, seed), "spectrum-1", k_top)
        t0 = time.perf_counter()
        spec = self.wd.cached(
            f"{name}-seed{seed}-spectrum",
            fp_s,
            lambda: study.spectrum_of(model, x_train, y_fit, k_top=k_top, progress=self.progress),
        )
        settings = dict(_ANALYSIS[self.protocol])
        if name not in _MARGIN_EXPERIMENTS:
            settings["margin_steps"] = 0
        fp_m = fingerprint_of(fp_s, "maps-1", settings, seed)
        maps = self.wd.cached(
            f"{name}-seed{seed}-maps",
            fp_m,
            lambda: study.maps_of(model, data, spec, margin_seed=seed, progress=self.progress, **settings),
        )
        tr = self.trained[(name, seed)]
        result = SeedResult(
            seed=seed,
            train_accuracy=study.accuracy(model, x_train, y_fit),
            test_accuracy=study.accuracy(model, data.split.x_test, data.split.y_test),
            final_train_loss=float(tr.history[-1]),
            num_params=spec.num_params,
            top_eigenvalues=[float(v) for v in spec.top_values[:20]],
            outliers=spec.outliers(),
            trace=spec.trace,
            lambda_max=spec.lambda_max,
            g_theta=spec.g_theta,
            g_theta_epsilon=spec.g_epsilon,
            g_theta_aligned=spec.g_n_aligned,
            g_theta_exact=spec.g_determined,
            margin=maps.margin.margin if maps.margin is not None else None,
            sign_agreement=maps.sign_agreement,
            parameter_norm=study.parameter_norm(model),
            hessian_rank=spec.rank,
            eigen_method=spec.method,
            eigen_residual=spec.residual,
            epochs=tr.epochs,
            train_seconds=tr.seconds,
            analysis_seconds=time.perf_counter() - t0,
        )
        return result, spec, maps

    def tsne(self, name: str) -> torch.Tensor:
        """The t-SNE embedding [n_train, 2] of the flattened training images of experiment
        ``name`` (scikit-learn, 2 components, random_state 42, as the paper), cached."""
        data = self.data_of(name)
        fp = fingerprint_of("tsne-1", self.data_fingerprint(name))
        return self.wd.cached(f"{data.name}-tsne", fp, lambda: study.tsne(data.split.x_train))


def _summary(seeds: list[SeedResult]) -> dict[str, MeanStd]:
    out = {}
    for key in _SUMMARY_KEYS:
        values = [getattr(s, key) for s in seeds]
        if any(v is None for v in values):
            continue
        out[key] = mean_std(float(v) for v in values)
    return out


def _claims(exps: dict[str, ExperimentResult], seeds: list[int], prefix: str) -> dict[str, Claim]:
    """The paper's claims, checked seed by seed on the experiments present."""
    by = {name: {s.seed: s for s in e.seeds} for name, e in exps.items()}
    img = prefix  # digits017 or mnist017
    claims: dict[str, Claim] = {}

    def add(name, statement, needed, test, paper):
        needed = [n.replace("digits017", img) for n in needed]
        if not all(n in by for n in needed):
            return
        holds = [bool(test(*[by[n][s] for n in needed])) for s in seeds]
        claims[name] = Claim(statement, needed, holds, sum(holds) / len(holds), paper)

    classes = {"hierarchical2_normal": 2, "gauss_normal": 3, "hierarchical_normal": 4}
    add(
        "c_minus_1_outliers",
        "three Gaussians, normal training: exactly C − 1 = 2 outliers",
        ["gauss_normal"],
        lambda g: g.outliers == 2,
        "2 outliers (0.154, 0.023, then ≤ 0.009)",
    )
    add(
        "c_minus_1_outliers_across_C",
        "C − 1 outliers for C = 2, 3, 4 (hierarchical merged, three Gaussians, hierarchical)",
        list(classes),
        lambda *rs: all(r.outliers == c - 1 for r, c in zip(rs, classes.values())),
        "C − 1 for C well-separated classes (abstract); hierarchical: two dominant outliers shown",
    )
    add(
        "c_minus_1_outliers_image_set",
        "image set (3 classes), normal training: C − 1 = 2 outliers",
        ["digits017_normal"],
        lambda d: d.outliers == 2,
        "MNIST-017: 5.092, 2.299, 1.422, … (no sharp C − 1 gap in the figure)",
    )
    add(
        "more_outliers_after_adversarial_init",
        "three Gaussians: more outliers after adversarial initialisation than after normal training",
        ["gauss_adversarial_init", "gauss_normal"],
        lambda a, n: a.outliers > n.outliers,
        "3 outliers vs 2 (histogram figure)",
    )
    add(
        "more_outliers_after_adversarial_init_image_set",
        "image set: more outliers after adversarial initialisation than after normal training",
        ["digits017_adversarial_init", "digits017_normal"],
        lambda a, n: a.outliers > n.outliers,
        "15.025, 2.073, … vs 5.092, 2.299, …",
    )
    pairs = [tuple(n.replace("digits017", img) for n in p) for p in COMPLEX_SIMPLE]
    pairs = [p for p in pairs if all(n in by for n in p)]
    flat = [n for p in pairs for n in p]
    for key, attr, statement in (
        ()
        if not pairs
        else (
            ("g_theta_larger_for_complex_boundaries", "g_theta", "G_θ"),
            ("trace_larger_for_complex_boundaries", "trace", "tr(H)"),
            ("lambda_max_larger_for_complex_boundaries", "lambda_max", "λ_1"),
        )
    ):
        add(
            key,
            f"{statement} is larger for the complex boundary in every pair "
            + "; ".join(f"{a} > {b}" for a, b in pairs),
            flat,
            lambda *rs, attr=attr: all(
                getattr(a, attr) > getattr(b, attr) for a, b in zip(rs[0::2], rs[1::2])
            ),
            "G_θ identifies simple boundaries (Fig. 5); tr(H) and λ_1 shown as competing measures",
        )
    add(
        "wider_margin_normal_than_noisy_init",
        "checkerboard: the margin estimate is larger after normal training than after noisy initialisation",
        ["checkerboard_normal", "checkerboard_noisy_init"],
        lambda n, z: n.margin > z.margin,
        "wider margin for the normal model (Fig. 5)",
    )
    add(
        "top_eigenvectors_trace_boundary",
        "three Gaussians, normal training: the signs of a_1, a_2 name the predicted class on "
        "≥ 90 % of the grid",
        ["gauss_normal"],
        lambda g: g.sign_agreement >= 0.9,
        "v_1 separates one class, v_2 the remaining pair (figure)",
    )
    return claims


def run_pipeline(
    out,
    *,
    protocol: str = "full",
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    mnist=None,
    progress: bool | None = None,
    quiet: bool = False,
) -> Path:
    """The whole programme (module docstring) into the work folder ``out``; returns the report
    folder. protocol: 'full' (the paper's), 'quick', or 'test' (a few epochs, for the tests).
    only: experiment names (default all); their dependencies are trained but not reported."""
    seeds = list(seeds or [0])
    image_source = "mnist017" if mnist is not None else "digits017"
    names = [n.replace("digits017_", f"{image_source}_") for n in configs.EXPERIMENTS]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise UserError(
                f"--only: unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(names)}"
            )
        names = [n for n in names if n in only]
    if mnist is not None:
        try:
            digits.read_mnist(mnist)
        except ValueError as e:
            raise UserError(str(e)) from None
    wd = WorkDir(out, "boundary")
    run = _Run(wd, protocol, seeds, image_source, mnist, progress)
    order = configs.order_with_dependencies(names, image_source)
    t_wall, t_cpu = time.perf_counter(), time.process_time()

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True, file=sys.stderr)

    timings: dict[str, float] = {}
    for k, name in enumerate(order, 1):
        t0, c0 = time.perf_counter(), time.process_time()
        say(f"[{k}/{len(order)}] train {name} ({run.cfg(name)['epochs']} epochs × {len(seeds)} seeds)")
        run.train(name)
        timings[f"train {name}"] = time.perf_counter() - t0
        timings[f"train {name} (cpu)"] = time.process_time() - c0
    experiments: dict[str, ExperimentResult] = {}
    spectra: dict[tuple[str, int], study.Spectrum] = {}
    maps: dict[tuple[str, int], study.Maps] = {}
    for k, name in enumerate(names, 1):
        t0, c0 = time.perf_counter(), time.process_time()
        say(f"[{k}/{len(names)}] Hessian, spectrum, G_θ and maps of {name}")
        per_seed = []
        for seed in seeds:
            r, spectra[(name, seed)], maps[(name, seed)] = run.analyse(name, seed)
            per_seed.append(r)
        experiments[name] = ExperimentResult(name, run.cfg(name), per_seed, _summary(per_seed))
        timings[f"analyse {name}"] = time.perf_counter() - t0
        timings[f"analyse {name} (cpu)"] = time.process_time() - c0
    claims = _claims(experiments, seeds, image_source)
    timings["total"] = time.perf_counter() - t_wall
    timings["total (cpu)"] = time.process_time() - t_cpu
    results = BoundaryResults(
        paper=PAPER,
        protocol=protocol,
        seeds=seeds,
        hessext_version=__version__,
        outlier_rule=study.OUTLIER_RULE,
        g_theta_definition=G_THETA_DEFINITION,
        experiments=experiments,
        claims={k: c.fraction for k, c in claims.items()},
        claim_details=claims,
        published=PUBLISHED,
        timings=timings,
    )
    say("figures and report")
    tsne = {n: run.tsne(n) for n in names if run.cfg(n)["dataset"] == image_source}
    with wd.report("hessext reproduce boundary: the Hessian and the decision boundary") as rep:
        write_report(rep, results, spectra, maps, {n: run.data_of(n) for n in names}, tsne)
        write_json(rep.tmp / "results.json", results)
        path = rep.finish()
    return path


def run(args) -> Path:
    """``hessext reproduce boundary`` (the CLI adds --quick/--out/--seed/--threads/--no-progress)."""
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    return run_pipeline(
        args.out,
        protocol="quick" if args.quick else "full",
        seeds=list(range(args.seed, args.seed + args.seeds)),
        only=only,
        mnist=args.mnist,
        progress=False if args.no_progress else None,
    )
