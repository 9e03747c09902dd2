"""``hessext demo boundary``: Hessian eigenvectors and the decision boundary on the
three-Gaussian set (Sabanayagam et al. 2023; docs/methods.md §6)."""

from __future__ import annotations

import torch
from torch import nn

from hessext import boundary as B
from hessext.curvature import hessian, hessian_operator
from hessext.datasets import toy2d
from hessext.models import mlp
from hessext.reporting import figures as F
from hessext.reporting.report import Report, StageTimer, pyplot
from hessext.training import train

# width: hidden units of the 2-width-width-3 MLP (100 = the paper's, P = 10,703: the top
# eigenpairs then come from Lanczos on the exact matrix-free Hessian, as a dense 0.9 GB matrix
# and its eigendecomposition would take minutes; at width ≤ 40 the dense Hessian and its full
# spectrum are computed, and G_θ is complete).
SIZES = {
    "small": dict(width=16, epochs=150, resolution=50, k=8, margin_steps=20),
    "default": dict(width=100, epochs=400, resolution=100, k=20, margin_steps=100),
}


def run_boundary_demo(
    out="hessext-boundary-report",
    *,
    size: str = "default",
    seed: int = 0,
    progress: bool | None = None,
    quiet: bool = False,
):
    """``hessext demo boundary``: train the MLP on three Gaussians, its Hessian spectrum,
    alignment maps, boundary reconstruction, G_θ and margin, as a report folder. Returns (path, timer)."""

    cfg = SIZES[size]
    timer = StageTimer(5, quiet=quiet)
    with Report(out, "hessext demo boundary: Hessian eigenvectors and the decision boundary") as rep:
        with timer.stage("three-Gaussian data and training"):
            x, y = toy2d.three_gaussians(300, seed=seed)
            s = toy2d.split(x, y, seed=seed)
            model = mlp(2, cfg["width"], cfg["width"], 3, seed=seed)
            _, hist = train(
                model,
                s.x_train,
                s.y_train,
                epochs=cfg["epochs"],
                lr=0.02,
                batch_size=64,
                seed=seed,
                progress=progress,
            )
            model.eval()
            with torch.no_grad():
                acc_train = float((model(s.x_train).argmax(1) == s.y_train).float().mean())
                acc_test = float((model(s.x_test).argmax(1) == s.y_test).float().mean())
            P = sum(p.numel() for p in model.parameters())
        with timer.stage("exact Hessian spectrum"):
            loss = nn.CrossEntropyLoss(reduction="none")
            dense = P <= 2000
            if dense:
                H = hessian(model, loss, (s.x_train, s.y_train), progress=progress)
                lam_all, V_all = H.eigh()
                lam, V = H.top_eigenpairs(cfg["k"])
            else:
                Hop = hessian_operator(model, loss, (s.x_train, s.y_train))
                lam, V = Hop.top_eigenpairs(cfg["k"], tol=1e-8)
                lam_all, V_all = lam, V
            n_out = B.outlier_count(lam)
        with timer.stage("alignment maps and reconstruction"):
            g = B.grid(s.x_train, resolution=cfg["resolution"], padding=0.1)
            a = B.alignment(model, g.points, V[:, :4], progress=progress)
            k_rec = max(n_out, 2)
            R = a[:, :k_rec] @ lam[:k_rec].to(a)
            with torch.no_grad():
                pred = model(g.points.float()).argmax(1)
            agree = B.sign_region_agreement(a[:, :2], pred)
        with timer.stage("generalisation measure and margin"):
            gm = B.generalisation_measure(model, s.x_train, V_all, seed=seed)
            me = B.margin_estimate(model, s.x_train, V[:, 0], steps=cfg["margin_steps"], lr=0.02, seed=seed)
        with timer.stage("figures and report"):
            _write(rep, F, B, locals())
            rep.table(["stage", "seconds"], timer.table())
            path = rep.finish()
    return path, timer


def _write(rep, F, B, L):
    plt = pyplot()
    cfg, s, lam, n_out, g, a, R, gm, me = (
        L[k] for k in ("cfg", "s", "lam", "n_out", "g", "a", "R", "gm", "me")
    )
    P, seed = L["P"], L["seed"]
    rep.text(
        "Three Gaussian classes in the plane (means (2, −1), (−2, 0), (0, 2); 300 points, "
        "50/20/30 train/test/val split), a ReLU MLP 2-"
        f"{cfg['width']}-{cfg['width']}-3 (P = {P:,}) trained with plain SGD (lr 0.02, batch 64, "
        f"{cfg['epochs']} epochs, seed {seed}). The claim under test: the top eigenvectors of the "
        "training-loss Hessian encode the decision boundary, and C − 1 = 2 eigenvalues stand out."
    )
    rep.table(
        ["item", "value"],
        [
            ["training / test accuracy", f"{L['acc_train']:.3f} / {L['acc_test']:.3f}"],
            ["final training loss", f"{L['hist'][-1]:.3g}"],
            [
                "Hessian",
                (
                    "exact dense, full spectrum"
                    if L["dense"]
                    else f"exact, matrix-free: top {len(lam)} eigenpairs by Lanczos (tol 1e-8)"
                ),
            ],
            ["top eigenvalues", ", ".join(f"{float(v):.3g}" for v in lam[:6])],
            ["outliers (λ_m/λ_{m+1} ≥ 2.5)", n_out],
        ],
    )
    rep.heading("Spectrum")
    rep.figure(
        F.spectrum(
            L["lam_all"],
            n_outliers=n_out,
            title=f"Hessian eigenvalues of the MLP (P = {P:,})" + ("" if L["dense"] else f", top {len(lam)}"),
        ),
        "boundary_spectrum",
        f"Eigenvalues largest first (symmetric-log axis). Circled: the {n_out} outliers, found by "
        "the rule 'largest m with λ_m / λ_{m+1} ≥ 2.5' (hessext.boundary.outlier_count).",
    )
    rep.heading("Alignment maps")
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.2))
    for i, ax in enumerate(axes.flat):
        F.plane_map(
            g,
            a[:, i],
            x_train=s.x_train,
            y_train=s.y_train,
            ax=ax,
            fig=fig,
            title=f"a_{i + 1}(x) = cos(g(x), v_{i + 1}),  λ_{i + 1} = {float(lam[i]):.3g}",
            cbar=f"a_{i + 1}",
        )
    axes[0, 0].legend(fontsize=7, loc="best", framealpha=0.8)
    fig.tight_layout()
    rep.figure(
        fig,
        "alignment",
        "Alignment a_i(x) of the reinforcing gradient g(x) = ∇θ CE(f(x), argmax f(x)) with the "
        "i-th eigenvector, on a grid over the input plane; black lines are where a_i changes "
        "sign. Markers: training points by class. For the outlier eigenvectors the sign "
        "changes follow the decision boundaries between the classes; a_i is set to 0 where "
        "the gradient vanishes (confident regions).",
    )
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    F.plane_map(
        g,
        R,
        x_train=s.x_train,
        y_train=s.y_train,
        ax=ax,
        fig=fig,
        contour_zero=True,
        title=f"R(x) = Σ_(i≤{L['k_rec']}) λ_i a_i(x)",
        cbar="R(x)",
    )
    pred = g.reshape(L["pred"]).numpy()
    ax.contour(
        g.xx.numpy(), g.yy.numpy(), pred, levels=[0.5, 1.5], colors="yellow", linewidths=1.2, linestyles="--"
    )
    ax.plot([], [], "k-", label="R = 0")
    ax.plot([], [], "--", color="yellow", label="model's decision boundary")
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    rep.figure(
        fig,
        "reconstruction",
        f"Boundary reconstruction from the top {L['k_rec']} eigenpairs; the model's actual "
        "decision boundary (class changes of argmax f on the grid) is dashed yellow. The signs "
        f"of (a_1, a_2) split the grid into regions whose majority predicted class agrees with "
        f"the model on {100 * L['agree'].agreement:.1f} % of the grid.",
    )
    rep.heading("Generalisation measure and margin")
    rep.text(
        f"**G_θ = {gm.g_theta:.4g}** ({gm.n_aligned} of P = {gm.num_params:,} eigenvectors align with "
        f"some training gradient at least as well as a random direction does, ε = {gm.epsilon:.4g} "
        f"= mean over 5 seeded random unit directions of max_n |cos(g(x_n), r)|). "
        + (
            "All eigenvectors were used."
            if gm.complete
            else f"Only the top {gm.num_eigenvectors} eigenvectors were computed, so this is a lower bound."
        )
    )
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    F.plane_map(
        g,
        a[:, 0],
        x_train=s.x_train,
        y_train=s.y_train,
        ax=ax,
        fig=fig,
        title="margin estimate on the a_1 map",
        cbar="a_1",
    )
    xb, xmax, xmin = me.x_b.numpy(), me.x_max.numpy(), me.x_min.numpy()
    ax.plot(*xb, "*", color="gold", mec="k", ms=16, label="x_b (gradient ∥ v_1)")
    ax.plot(*xmax, "P", color="red", mec="k", ms=11, label="x_max (largest a_1)")
    ax.plot(*xmin, "X", color="blue", mec="k", ms=11, label="x_min (smallest a_1)")
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    rep.figure(
        fig,
        "margin",
        f"Margin estimate: x_b minimises (cos²(g(x), v_1) − 1)² (reached cos² = {me.cos2:.4f}); "
        f"margin = min(‖x_max − x_b‖, ‖x_min − x_b‖) = **{me.margin:.4g}** (input units).",
    )
    rep.text(f"**margin = {me.margin:.4g}**, cos²(g(x_b), v_1) = {me.cos2:.4f}.")
    rep.heading("Timings (seconds)")
