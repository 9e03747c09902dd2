"""The figures of the decision-boundary study (``hessext reproduce boundary``, ``hessext demo
boundary``). Each function takes plain tensors/arrays (and hessext.boundary.Grid objects) and
returns a matplotlib Figure; the callers put the seed-averaged numbers into the titles."""

from __future__ import annotations

import math

import numpy as np

from hessext.reporting.figures import _np, plane_map
from hessext.reporting.report import pyplot

__all__ = [
    "top_spectra",
    "outliers_vs_classes",
    "alignment_maps",
    "reconstructions",
    "eigenvalue_histograms",
    "max_alignment_histograms",
    "flatness",
    "margins",
    "class_alignment_curves",
    "tsne_alignments",
    "intro_1d",
]


def _boundary(ax, g, prediction, num_classes: int, color="yellow"):
    """The model's decision boundary: where its predicted class changes on the grid."""
    pred = _np(g.reshape(prediction)).astype(float)
    if pred.min() < pred.max():
        levels = [c + 0.5 for c in range(num_classes - 1)]
        ax.contour(_np(g.xx), _np(g.yy), pred, levels=levels, colors=color, linewidths=1.1, linestyles="--")


def _grid_of(n: int, cols: int):
    plt = pyplot()
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def top_spectra(entries, *, title: str):
    """Top eigenvalues per experiment, log scale. entries: (label, values [S, k] descending per
    seed, n_outliers [S], published list or None). Mean over seeds with the min–max band;
    outliers (rounded mean count) circled; published values as black crosses."""
    fig, axes = _grid_of(len(entries), 4)
    for ax, (label, values, outliers, published) in zip(axes, entries):
        v = np.clip(_np(values).astype(float), 1e-12, None)
        k = v.shape[1]
        rank = np.arange(1, k + 1)
        ax.fill_between(
            rank, np.nanmin(v, 0), np.nanmax(v, 0), color="tab:blue", alpha=0.2, label="min–max over seeds"
        )
        ax.plot(rank, np.nanmean(v, 0), ".-", color="tab:blue", ms=4, lw=1, label="mean over seeds")
        m = int(round(float(np.mean(outliers))))
        if m:
            ax.plot(rank[:m], np.nanmean(v, 0)[:m], "o", mfc="none", color="k", ms=8, label=f"outliers ({m})")
        if published:
            p = np.asarray(published, dtype=float)
            ax.plot(np.arange(1, len(p) + 1), p, "kx", ms=6, label="paper")
        ax.set_yscale("log")
        o = np.asarray(outliers, dtype=float)
        ax.set_title(
            f"{label}\noutliers {o.mean():.2g} ± {o.std(ddof=1) if o.size > 1 else 0:.2g}", fontsize=8
        )
        ax.set_xlabel("rank i", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("λ_i", fontsize=8)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def outliers_vs_classes(entries, *, title: str):
    """Outlier count against the number of classes C. entries: (label, C, counts [S])."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    cs = sorted({c for _, c, _ in entries})
    ax.plot([min(cs) - 0.3, max(cs) + 0.3], [min(cs) - 1.3, max(cs) - 0.7], "k--", lw=1, label="C − 1")
    offsets: dict[int, int] = {}
    for label, c, counts in entries:
        k = np.asarray(counts, dtype=float)
        dx = 0.08 * offsets.get(c, 0)
        offsets[c] = offsets.get(c, 0) + 1
        ax.errorbar(
            c + dx, k.mean(), yerr=k.std(ddof=1) if k.size > 1 else 0, fmt="o", capsize=3, label=label
        )
    ax.set_xticks(cs)
    ax.set_xlabel("number of classes C")
    ax.set_ylabel("outliers in the spectrum (mean ± std over seeds)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def alignment_maps(g, alignments, prediction, *, x_train, y_train, eigenvalues, num_classes: int, title: str):
    """a_i on the grid for i = 1 … m (alignments [R·R, m]) with the zero level (black) and the
    model's decision boundary (dashed yellow); eigenvalues [≥ m]."""
    m = alignments.shape[1]
    fig, axes = _grid_of(m, min(m, 4))
    for i, ax in enumerate(axes):
        plane_map(
            g,
            alignments[:, i],
            x_train=x_train,
            y_train=y_train,
            ax=ax,
            fig=fig,
            title=f"a_{i + 1}(x),  λ_{i + 1} = {float(eigenvalues[i]):.3g}",
            cbar=f"a_{i + 1}",
        )
        _boundary(ax, g, prediction, num_classes)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def reconstructions(entries, *, title: str):
    """R(x) = Σ λ_i a_i(x) per experiment. entries: (label, grid, R [R·R], prediction [R·R],
    x_train, y_train, num_classes)."""
    fig, axes = _grid_of(len(entries), 4)
    for ax, (label, g, R, pred, x, y, C) in zip(axes, entries):
        plane_map(g, R, x_train=x, y_train=y, ax=ax, fig=fig, title=label, cbar="R(x)")
        _boundary(ax, g, pred, C)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def eigenvalue_histograms(entries, *, title: str, bins: int = 200):
    """The paper's Fig. 5 histograms: the density of all P eigenvalues, log counts, one panel
    per model. entries: (label, eigenvalues [P], text)."""
    plt = pyplot()
    fig, axes = plt.subplots(len(entries), 1, figsize=(6.4, 2.3 * len(entries)), squeeze=False)
    for ax, (label, lam, text) in zip(axes[:, 0], entries):
        v = _np(lam).astype(float)
        ax.hist(v, bins=bins, color="tab:blue")
        ax.set_yscale("log")
        ax.set_ylabel("count")
        ax.set_title(label, fontsize=9)
        ax.text(
            0.98,
            0.92,
            text,
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            bbox=dict(facecolor="w", alpha=0.8, lw=0),
        )
    axes[-1, 0].set_xlabel("eigenvalue λ")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def max_alignment_histograms(entries, *, title: str):
    """Per eigenvector, max_n |a_i(x_n)| over the training points, with the threshold ε.
    entries: (label, max_alignment [r] of the eigenvectors with λ ≠ 0, zeros (how many null
    eigenvectors, whose maxima are below ε by construction), epsilon, text)."""
    fig, axes = _grid_of(len(entries), 3)
    for ax, (label, best, zeros, eps, text) in zip(axes, entries):
        b = _np(best).astype(float)
        ax.hist(b, bins=np.linspace(0, 1, 51), color="tab:blue", label=f"{b.size} eigenvectors with λ ≠ 0")
        ax.axvline(eps, color="tab:red", ls="--", label=f"ε = {eps:.3g}")
        ax.set_yscale("log")
        ax.set_xlabel("max_n |a_i(x_n)|", fontsize=8)
        ax.set_title(f"{label}\n{text}; + {zeros:,} null eigenvectors", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def flatness(entries, *, title: str):
    """G_θ against tr(H) and against λ_1, every experiment and seed. entries: (label, g [S],
    trace [S], lambda_max [S])."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = "osD^v<>pP*Xh"
    for k, (label, g, tr, lm) in enumerate(entries):
        mk = markers[k % len(markers)]
        axes[0].plot(_np(tr), _np(g), mk, label=label, alpha=0.8)
        axes[1].plot(_np(lm), _np(g), mk, label=label, alpha=0.8)
    for ax, xl in zip(axes, ("tr(H)", "λ_1")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("G_θ")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def margins(entries, *, title: str):
    """The margin estimate on the a_1 map. entries: (label, grid, a_1 [R·R], prediction,
    x_train, y_train, number of classes, margin (with x_b, x_max, x_min [2]))."""
    fig, axes = _grid_of(len(entries), 2)
    for ax, (label, g, a1, pred, x, y, C, me) in zip(axes, entries):
        plane_map(g, a1, x_train=x, y_train=y, ax=ax, fig=fig, title=label, cbar="a_1")
        _boundary(ax, g, pred, C)
        ax.plot(*_np(me.x_b), "*", color="gold", mec="k", ms=15, label="x_b (g ∥ v_1)")
        ax.plot(*_np(me.x_max), "P", color="red", mec="k", ms=10, label="x_max (largest a_1)")
        ax.plot(*_np(me.x_min), "X", color="blue", mec="k", ms=10, label="x_min (smallest a_1)")
        ax.legend(fontsize=6, loc="lower left", framealpha=0.8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def class_alignment_curves(entries, *, title: str):
    """The paper's per-class alignment curves: for the top m = 10·C eigenvectors, a_i of every
    training point (thin) and the mean per class (thick). entries: (label, point_alignment
    [N, m], y_train [N])."""
    fig, axes = _grid_of(len(entries), 3)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for ax, (label, a, y) in zip(axes, entries):
        a, y = _np(a).astype(float), _np(y)
        rank = np.arange(1, a.shape[1] + 1)
        for c in np.unique(y):
            col = colors[int(c) % len(colors)]
            ax.plot(rank, a[y == c].T, color=col, alpha=0.05, lw=0.5)
            ax.plot(rank, a[y == c].mean(0), color=col, lw=2.2, label=f"class {int(c)}")
        ax.set_ylim(-1, 1)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("eigenvector i (by λ, largest first)", fontsize=8)
        ax.set_ylabel("alignment a_i(x_n)", fontsize=8)
        ax.set_title(label, fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def tsne_alignments(embedding, rows, *, labels, title: str):
    """The image set's training points on a t-SNE embedding [N, 2], coloured by a_i. rows:
    (row label, alignments [N, k]); labels [N] set the markers."""
    plt = pyplot()
    k = max(a.shape[1] for _, a in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(3.4 * k, 3.0 * len(rows)), squeeze=False)
    e, y = _np(embedding), _np(labels)
    markers = ["o", "s", "^", "D"]
    for r, (row, a) in enumerate(rows):
        a = _np(a).astype(float)
        for i in range(k):
            ax = axes[r, i]
            lim = max(abs(a[:, i]).max(), 1e-12)
            for c in np.unique(y):
                sc = ax.scatter(
                    e[y == c, 0],
                    e[y == c, 1],
                    c=a[y == c, i],
                    cmap="RdBu_r",
                    vmin=-lim,
                    vmax=lim,
                    s=9,
                    marker=markers[int(c) % 4],
                    linewidths=0,
                )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{row}: a_{i + 1}", fontsize=8)
            fig.colorbar(sc, ax=ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def intro_1d(xs, logits, gradients, alignment, *, x_data, y_data, eigenvalues, title: str):
    """The paper's introduction figure: the predictions f_c(x) on a line, the reinforcing
    gradients g(x) [M, P] as an image, the alignments a_1, a_2 [M, 2], the training data, and
    the spectrum. The predicted class changes are dotted lines."""
    plt = pyplot()
    x = _np(xs).astype(float)
    r = _np(logits).astype(float)
    pred = r.argmax(1)
    changes = [0.5 * (x[i] + x[i + 1]) for i in range(len(x) - 1) if pred[i] != pred[i + 1]]
    fig = plt.figure(figsize=(10, 8.5))
    gs = fig.add_gridspec(5, 2, width_ratios=[4, 1.3], height_ratios=[1.2, 1.6, 0.9, 0.6, 0.01])
    ext = (x[0], x[-1])
    ax0 = fig.add_subplot(gs[0, 0])
    for c in range(r.shape[1]):
        ax0.plot(x, r[:, c], label=f"f_{c}(x)")
    ax0.set_ylabel("prediction")
    ax0.legend(fontsize=7)
    ax1 = fig.add_subplot(gs[1, 0], sharex=ax0)
    G = _np(gradients).astype(float)
    lim = max(abs(G).max(), 1e-12)
    ax1.imshow(G.T, aspect="auto", cmap="PiYG", vmin=-lim, vmax=lim, extent=(*ext, G.shape[1] - 0.5, -0.5))
    ax1.set_ylabel("g(x), parameter")
    ax2 = fig.add_subplot(gs[2, 0], sharex=ax0)
    A = _np(alignment).astype(float)
    ax2.imshow(A.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, extent=(*ext, A.shape[1] - 0.5, -0.5))
    ax2.set_yticks(range(A.shape[1]), [f"a_{i + 1}" for i in range(A.shape[1])])
    ax2.set_ylabel("alignment")
    ax3 = fig.add_subplot(gs[3, 0], sharex=ax0)
    xd, yd = _np(x_data).astype(float).ravel(), _np(y_data)
    for c in np.unique(yd):
        ax3.scatter(xd[yd == c], np.zeros((yd == c).sum()), s=60, label=f"class {int(c)}")
    ax3.set_yticks([])
    ax3.set_xlabel("input x")
    ax3.legend(fontsize=7, ncol=2)
    for ax in (ax0, ax1, ax2, ax3):
        for b in changes:
            ax.axvline(b, color="k", ls=":", lw=1)
    axs = fig.add_subplot(gs[0:2, 1])
    lam = np.sort(_np(eigenvalues).astype(float))[::-1]
    axs.plot(np.arange(1, lam.size + 1), lam, "k.")
    axs.set_xlabel("i-th largest eigenvalue", fontsize=8)
    axs.set_ylabel("λ_i", fontsize=8)
    axs.set_title("Hessian spectrum", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
