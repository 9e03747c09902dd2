"""The report figures. Each function returns a matplotlib Figure (Agg backend, imported
lazily through hessext.report.pyplot) and takes plain tensors/arrays, so the demos, ``hessext
analyze`` and users' own scripts draw the same pictures."""

from __future__ import annotations

import numpy as np

from hessext.reporting.report import pyplot


def _np(t):
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def spectrum(
    eigenvalues,
    *,
    damping=None,
    n_outliers: int | None = None,
    threshold=None,
    title: str = "Hessian spectrum",
):
    """Eigenvalues sorted descending against their rank on a symlog axis (linear near 0):
    positive blue, negative red; the damping δ and the extrapolation-score threshold as lines."""
    plt = pyplot()
    lam = np.sort(_np(eigenvalues).astype(np.float64))[::-1]
    rank = np.arange(1, lam.size + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    scale = max(abs(lam).max(), 1e-300)
    # |λ| below 1e-6·max|λ| is rounding of directions the loss does not see at all
    linthresh = max(scale * 1e-6, 1e-12)
    zero = abs(lam) < linthresh
    pos, neg = (lam > 0) & ~zero, (lam < 0) & ~zero
    ax.plot(rank[pos], lam[pos], ".", ms=3, color="tab:blue", label=f"λ > 0 ({pos.sum()})")
    ax.plot(rank[neg], lam[neg], ".", ms=3, color="tab:red", label=f"λ < 0 ({neg.sum()})")
    ax.plot(rank[zero], lam[zero], ".", ms=3, color="0.5", label=f"|λ| < {linthresh:.1g} ≈ 0 ({zero.sum()})")
    if n_outliers:
        ax.plot(
            rank[:n_outliers],
            lam[:n_outliers],
            "o",
            mfc="none",
            ms=9,
            color="k",
            label=f"outliers ({n_outliers})",
        )
    if damping:
        ax.axhline(-damping, color="tab:red", ls="--", lw=1, label=f"−δ = −{damping:.3g} (damping)")
    if threshold:
        ax.axhline(threshold, color="tab:green", ls=":", lw=1.2, label=f"score threshold t = {threshold:.3g}")
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.axhspan(-linthresh, linthresh, color="0.92", zorder=0)
    ax.set_xlabel("eigenvalue rank (1 = largest)")
    ax.set_ylabel(f"eigenvalue λ  (symlog; linear for |λ| < {linthresh:.1g})")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    return fig


def image_rows(rows, *, title: str, row_labels=None, cmap="viridis", xlabel="eigenstate i", ylabel="site j"):
    """A grid of 2-D images: rows = list of lists of (image [H, W], caption)."""
    plt = pyplot()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols + 0.8, 2.1 * n_rows + 0.6), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(row):
                ax.axis("off")
                continue
            img, caption = row[j]
            ax.imshow(_np(img), cmap=cmap, origin="upper", aspect="equal")
            ax.set_title(caption, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == n_rows - 1:
                ax.set_xlabel(xlabel, fontsize=7)
            if j == 0:
                label = row_labels[i] if row_labels else ""
                ax.set_ylabel((label + "\n" if label else "") + ylabel, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def influence_bars(scores_per_test, *, title: str, k: int = 5):
    """For data that are not images: the top-k helpful (positive) and harmful (negative)
    training indices per test point, as horizontal bars."""
    plt = pyplot()
    m = len(scores_per_test)
    fig, axes = plt.subplots(1, m, figsize=(3.6 * m, 3.2), squeeze=False)
    for ax, (label, scores) in zip(axes[0], scores_per_test):
        s = _np(scores)
        order = np.argsort(s)
        idx = np.concatenate([order[::-1][:k], order[:k][::-1]])
        vals = s[idx]
        ax.barh(range(len(idx)), vals, color=["tab:green" if v > 0 else "tab:red" for v in vals])
        ax.set_yticks(range(len(idx)), [f"train #{i}" for i in idx], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("influence on test loss\n(+ helped, − harmed)", fontsize=8)
        ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def per_set_distribution(
    values_per_set, *, positions=None, xlabel: str, ylabel: str, title: str, log: bool = True
):
    """Median and interquartile range (and 5–95 % whiskers) of a per-input quantity for each
    data set; positions (e.g. the disorder W) on the x axis, or categorical when None."""
    plt = pyplot()
    names = list(values_per_set)
    xs = np.arange(len(names)) if positions is None else np.asarray(positions, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    data = [_np(values_per_set[n]).astype(float) for n in names]
    q = np.array([np.percentile(d, [5, 25, 50, 75, 95]) for d in data])
    ax.fill_between(xs, q[:, 0], q[:, 4], color="tab:blue", alpha=0.12, label="5–95 % of inputs")
    ax.fill_between(xs, q[:, 1], q[:, 3], color="tab:blue", alpha=0.3, label="25–75 %")
    ax.plot(xs, q[:, 2], "o-", color="tab:blue", label="median")
    ax.plot(xs, [d.mean() for d in data], "s--", color="tab:orange", ms=4, label="mean")
    if positions is None:
        ax.set_xticks(xs, names)
    if log and all((d > 0).all() for d in data):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def ood_histogram(
    clean, shifted, *, auroc: float, clean_label: str, shifted_label: str, xlabel: str, title: str
):
    """Histograms (log-spaced bins when positive) of a score on in-distribution vs shifted inputs."""
    plt = pyplot()
    a, b = _np(clean).astype(float), _np(shifted).astype(float)
    both = np.concatenate([a, b])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if (both > 0).all():
        bins: np.ndarray | int = np.geomspace(both.min(), both.max(), 30)
        ax.set_xscale("log")
    else:
        bins = 30
    ax.hist(a, bins=bins, alpha=0.6, label=f"{clean_label} (n = {a.size})")
    ax.hist(b, bins=bins, alpha=0.6, label=f"{shifted_label} (n = {b.size})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of inputs")
    ax.set_title(f"{title}\nAUROC = {auroc:.3f} (1 = perfect separation, 0.5 = chance)")
    ax.legend(fontsize=8)
    return fig


def cam_panels(images, maps, captions, *, title: str):
    """Input images (top row) and their class activation maps minus each map's mean (bottom
    row, diverging colours centred on 0, each map on its own symmetric scale: red = more
    evidence for the predicted class than average)."""
    plt = pyplot()
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n + 1.0, 4.8), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(_np(images[j]), cmap="viridis")
        axes[0, j].set_title(captions[j], fontsize=7)
        m = _np(maps[j]).astype(float)
        m = m - m.mean()
        lim = max(abs(m).max(), 1e-12)
        axes[1, j].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[1, j].set_xlabel(f"eigenstate i\n(colour range ±{lim:.2g})", fontsize=7)
    axes[0, 0].set_ylabel("input |ψ(j)|² of\neigenstate i, site j", fontsize=7)
    axes[1, 0].set_ylabel("CAM − mean\n(predicted class)", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plane_map(
    g,
    values,
    *,
    x_train,
    y_train,
    title: str,
    cbar: str,
    diverging: bool = True,
    contour_zero: bool = True,
    ax=None,
    fig=None,
):
    """A scalar field on a 2-D grid (hessext.boundary.Grid) with the training points on top;
    the zero level drawn black (sign changes trace the decision boundary)."""
    plt = pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 4.3))
    V = _np(g.reshape(values)).astype(float)
    lim = max(abs(V).max(), 1e-12)
    kw = dict(cmap="RdBu_r", vmin=-lim, vmax=lim) if diverging else dict(cmap="viridis")
    im = ax.imshow(V, origin="lower", extent=g.extent, aspect="auto", **kw)
    if contour_zero and V.min() < 0 < V.max():
        ax.contour(_np(g.xx), _np(g.yy), V, levels=[0.0], colors="k", linewidths=1.0)
    x, y = _np(x_train), _np(y_train)
    markers = ["o", "s", "^", "D", "v"]
    for c in np.unique(y):
        ax.scatter(
            x[y == c, 0],
            x[y == c, 1],
            s=9,
            marker=markers[int(c) % 5],
            facecolor="w",
            edgecolor="k",
            linewidths=0.5,
            label=f"class {int(c)}",
        )
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=cbar)
    if own:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    return fig


def spectral_density(density, *, sigma=None, title: str = "Spectral density (stochastic Lanczos quadrature)"):
    """The Gaussian-smoothed eigenvalue density of a hessext.curvature.SpectralDensity on a
    log-scaled density axis (PyHessian's picture), with the quadrature nodes as a rug."""
    plt = pyplot()
    grid, phi = density.density(sigma=sigma)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.semilogy(_np(grid), np.maximum(_np(phi), 1e-12), color="tab:blue", lw=1.2)
    nodes = _np(density.nodes).reshape(-1)
    ax.plot(nodes, np.full_like(nodes, 1e-12), "|", color="0.4", ms=8, alpha=0.5, label="Ritz values")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def curvature_comparison(result, *, reference: str = "ggn", title: str | None = None):
    """Bars of the relative Frobenius error per layer block (and in total) of every
    approximation of a hessext.attribution.CurvatureComparison against ``reference`` ('ggn' or
    'hessian'), beside the influence Spearman correlation with the exact Hessian's scores."""
    plt = pyplot()
    names = list(dict.fromkeys(a for a, r, _ in result.errors if r == reference))
    blocks = result.blocks + ["total"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1.4]})
    width = 0.8 / max(1, len(names))
    xs = np.arange(len(blocks))
    for k, name in enumerate(names):
        vals = [result.errors[(name, reference, b)][0] for b in blocks]
        ax.bar(xs + k * width, vals, width, label=name)
    ax.set_xticks(xs + width * (len(names) - 1) / 2)
    ax.set_xticklabels(blocks, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"‖C − {reference.upper()}‖_F / ‖{reference.upper()}‖_F")
    ax.set_title(title or f"Relative error per layer block vs the exact {reference.upper()}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    rows = [
        (n, r.get("spearman_hessian"))
        for n, r in result.influence.items()
        if r.get("spearman_hessian") is not None
    ]
    bx.barh([n for n, _ in rows], [v if v == v else 0.0 for _, v in rows], color="tab:green")
    bx.set_xlim(min([0.0] + [v for _, v in rows if v == v]), 1.0)
    bx.set_xlabel("influence Spearman vs exact Hessian")
    bx.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
