"""``hessext demo boundary``: Hessian eigenvectors and the decision boundary on the paper's three
Gaussians (Sabanayagam et al. 2023; docs/methods.md §6, docs/boundary-paper.md).

One model, one seed; the whole programme of the paper is ``hessext reproduce boundary``. The
analysis is the pipeline's (hessext/apps/boundary_study.py), and the report and results.json
are written from one typed object (DemoBoundaryResults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hessext.apps import boundary_study as study
from hessext.reporting import boundary_figures as bf
from hessext.reporting import figures as F
from hessext.reporting.report import Report, StageTimer
from hessext.reporting.results import write_json
from hessext.training import train_mlps

__all__ = ["DemoBoundaryResults", "SIZES", "run_boundary_demo"]

# width: hidden units of the 2-width-width-3 MLP (100 = the paper's, P = 10,703). Every eigenpair
# with λ ≠ 0 comes from hessext.curvature.range_eigh on the exact Hessian (~30 s of CPU at
# P = 10,703, a tenth of a full eigendecomposition), so G_θ is complete at every size.
SIZES = {
    "small": dict(width=16, epochs=150, resolution=50, margin_steps=20),
    "default": dict(width=100, epochs=2000, resolution=100, margin_steps=300),
}


@dataclass
class DemoBoundaryResults:
    """What ``hessext demo boundary`` measured (results.json, and the report's numbers).

    top_eigenvalues: the 10 largest, descending; outliers by boundary_study.OUTLIER_RULE;
    g_theta over all P eigenvectors (g_theta_exact: determined by the rank eigenvectors with
    λ ≠ 0); sign_agreement: fraction of the grid where the signs of (a_1, a_2) name the
    predicted class; margin in input units, margin_cos2 = cos²(g(x_b), v_1) reached."""

    size: str
    seed: int
    width: int
    epochs: int
    num_params: int
    train_accuracy: float
    test_accuracy: float
    final_train_loss: float
    hessian_rank: int
    eigen_method: str
    top_eigenvalues: list[float]
    outliers: int
    trace: float
    lambda_max: float
    g_theta: float
    g_theta_epsilon: float
    g_theta_aligned: int
    g_theta_exact: bool
    sign_agreement: float
    reconstruction_k: int
    margin: float
    margin_cos2: float
    timings: dict = field(default_factory=dict)


def run_boundary_demo(
    out="hessext-boundary-report",
    *,
    size: str = "default",
    seed: int = 0,
    progress: bool | None = None,
    quiet: bool = False,
):
    """``hessext demo boundary``: train the MLP on the paper's three Gaussians (seeded), its exact
    Hessian spectrum, alignment maps, boundary reconstruction, G_θ and margin, as a report folder
    (with results.json). Returns (path, timer)."""
    cfg = SIZES[size]
    timer = StageTimer(4, quiet=quiet)
    with Report(out, "hessext demo boundary: Hessian eigenvectors and the decision boundary") as rep:
        with timer.stage("three-Gaussian data and training"):
            data = study.load_data("gauss")
            s = data.split
            model = study.build_model({"name": "mlp", "width": cfg["width"]}, data, seed)
            (hist,) = train_mlps(
                [model],
                s.x_train,
                s.y_train,
                epochs=cfg["epochs"],
                lr=0.02,
                batch_size=64,
                seeds=[seed],
                progress=progress,
            )
            model.eval()
        with timer.stage("exact Hessian spectrum and G_θ"):
            spec = study.spectrum_of(model, s.x_train, s.y_train, k_top=10, progress=progress)
        with timer.stage("alignment maps, reconstruction and margin"):
            maps = study.maps_of(
                model,
                data,
                spec,
                resolution=cfg["resolution"],
                n_maps=4,
                margin_steps=cfg["margin_steps"],
                margin_seed=seed,
                progress=progress,
            )
        if maps.margin is None or maps.sign_agreement is None:  # a plane set with margin_steps > 0
            raise RuntimeError("demo boundary: the margin estimate was not computed")
        res = DemoBoundaryResults(
            size=size,
            seed=seed,
            width=cfg["width"],
            epochs=cfg["epochs"],
            num_params=spec.num_params,
            train_accuracy=study.accuracy(model, s.x_train, s.y_train),
            test_accuracy=study.accuracy(model, s.x_test, s.y_test),
            final_train_loss=hist[-1],
            hessian_rank=spec.rank,
            eigen_method=spec.method,
            top_eigenvalues=[float(v) for v in spec.top_values[:10]],
            outliers=spec.outliers(),
            trace=spec.trace,
            lambda_max=spec.lambda_max,
            g_theta=spec.g_theta,
            g_theta_epsilon=spec.g_epsilon,
            g_theta_aligned=spec.g_n_aligned,
            g_theta_exact=spec.g_determined,
            sign_agreement=maps.sign_agreement,
            reconstruction_k=maps.k_rec,
            margin=maps.margin.margin,
            margin_cos2=maps.margin.cos2,
        )
        with timer.stage("figures and report"):
            _write(rep, res, spec, maps, data)
            rep.table(["stage", "seconds"], timer.table())
            res.timings = dict(timer.timings)
            write_json(rep.tmp / "results.json", res)
            path = rep.finish()
    return path, timer


def _write(rep: Report, res: DemoBoundaryResults, spec: study.Spectrum, maps: study.Maps, data: study.Data):
    """The demo's report, from its results and the model's spectrum and figure data."""
    s = data.split
    if maps.extent is None or maps.grid_alignment is None or maps.margin is None:
        raise RuntimeError("demo boundary: the plane maps were not computed")
    g = study.plane_grid(maps.extent, maps.resolution)
    rep.text(
        "The paper's three Gaussian classes (means (2, −1), (−2, 0), (0, 2), per-axis std (0.5, 0.5), "
        "(0.5, 1), (0.5, 0.5); its 300 points and 50/20/30 train/test/val split), a ReLU MLP 2-"
        f"{res.width}-{res.width}-3 (P = {res.num_params:,}) trained with plain SGD (lr 0.02, batch 64, "
        f"{res.epochs} epochs, seed {res.seed}). The claim under test: the top eigenvectors of the "
        "training-loss Hessian encode the decision boundary, and C − 1 = 2 eigenvalues stand out. "
        "The whole paper, over several seeds: `hessext reproduce boundary`."
    )
    rep.table(
        ["item", "value"],
        [
            ["training / test accuracy", f"{res.train_accuracy:.3f} / {res.test_accuracy:.3f}"],
            ["final training loss", f"{res.final_train_loss:.3g}"],
            [
                "Hessian",
                f"exact, float64; all {res.hessian_rank:,} eigenpairs with λ ≠ 0 ({res.eigen_method}), "
                f"the other {res.num_params - res.hessian_rank:,} are its null space",
            ],
            ["top eigenvalues", ", ".join(f"{v:.3g}" for v in res.top_eigenvalues[:6])],
            ["outliers (λ_m/λ_{m+1} ≥ 2.5)", res.outliers],
            ["tr(H), λ_1", f"{res.trace:.4g}, {res.lambda_max:.4g}"],
        ],
    )
    rep.heading("Spectrum")
    rep.figure(
        F.spectrum(
            spec.spectrum(),
            n_outliers=res.outliers,
            title=f"Hessian eigenvalues of the MLP (P = {res.num_params:,})",
        ),
        "boundary_spectrum",
        f"All P eigenvalues, largest first (symmetric-log axis). Circled: the {res.outliers} outliers, found "
        "by the rule 'largest m with λ_m / λ_{m+1} ≥ 2.5' (hessext.boundary.outlier_count).",
    )
    rep.heading("Alignment maps")
    rep.figure(
        bf.alignment_maps(
            g,
            maps.grid_alignment,
            maps.grid_prediction,
            x_train=s.x_train,
            y_train=s.y_train,
            eigenvalues=spec.top_values,
            num_classes=3,
            title=f"a_i(x) = cos(g(x), v_i): sign agreement {100 * res.sign_agreement:.1f} %",
        ),
        "alignment",
        "Alignment a_i(x) of the reinforcing gradient g(x) = ∇θ CE(f(x), argmax f(x)) with the i-th "
        "eigenvector, on a grid over the input plane; black lines are where a_i changes sign, dashed "
        "yellow the model's decision boundary. Markers: training points by class. a_i is set to 0 "
        "where the gradient vanishes (confident regions).",
    )
    rep.figure(
        bf.reconstructions(
            [
                (
                    f"R(x) = Σ_(i≤{res.reconstruction_k}) λ_i a_i(x)",
                    g,
                    maps.reconstruction,
                    maps.grid_prediction,
                    s.x_train,
                    s.y_train,
                    3,
                )
            ],
            title="Boundary reconstruction",
        ),
        "reconstruction",
        f"Boundary reconstruction from the top {res.reconstruction_k} eigenpairs; the model's actual "
        "decision boundary (class changes of argmax f on the grid) is dashed yellow. The signs of "
        f"(a_1, a_2) split the grid into regions whose majority predicted class agrees with the model on "
        f"{100 * res.sign_agreement:.1f} % of the grid.",
    )
    rep.heading("Generalisation measure and margin")
    rep.text(
        f"**G_θ = {res.g_theta:.4g}** ({res.g_theta_aligned} of P = {res.num_params:,} eigenvectors align "
        f"with some training gradient at least as well as a random direction does, ε = "
        f"{res.g_theta_epsilon:.4g} = mean over 5 seeded random unit directions of max_n |cos(g(x_n), r)|). "
        + (
            "All eigenvectors were used. (The null eigenvectors cannot reach ε: the training "
            "gradients lie in the span of the others up to less than ε.)"
            if res.g_theta_exact
            else "The eigenvectors found do not determine G_θ: this is a lower bound."
        )
    )
    rep.figure(
        bf.margins(
            [
                (
                    f"margin estimate on the a_1 map: {res.margin:.4g}",
                    g,
                    maps.grid_alignment[:, 0],
                    maps.grid_prediction,
                    s.x_train,
                    s.y_train,
                    3,
                    maps.margin,
                )
            ],
            title="Margin estimate",
        ),
        "margin",
        f"Margin estimate: x_b minimises (cos²(g(x), v_1) − 1)² (reached cos² = {res.margin_cos2:.4f}); "
        f"margin = min(‖x_max − x_b‖, ‖x_min − x_b‖) = **{res.margin:.4g}** (input units).",
    )
    rep.text(f"**margin = {res.margin:.4g}**, cos²(g(x_b), v_1) = {res.margin_cos2:.4f}.")
    rep.heading("Timings (seconds)")
