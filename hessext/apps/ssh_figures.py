"""Figures of the SSH population study (``hessext reproduce ssh``). Each returns a matplotlib
Figure (Agg, imported lazily through hessext.reporting.report.pyplot) drawn from plain arrays."""

from __future__ import annotations

import math

import numpy as np

from hessext.datasets.ssh import critical_v
from hessext.reporting.report import pyplot

__all__ = ["accuracy_histogram", "generalisation_maps", "cam_grid", "embedding_panels", "signal_scatter"]


def _np(t):
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def accuracy_histogram(accuracy, *, paper_median: float, paper_above: int, paper_n: int):
    """Histogram of the networks' OOD accuracy with our median, the paper's median and 0.8."""
    plt = pyplot()
    acc = np.asarray(accuracy, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(acc, bins=np.linspace(0.4, 1.0, 25), color="tab:blue", alpha=0.75, edgecolor="k", lw=0.5)
    ax.axvline(np.median(acc), color="tab:blue", ls="-", lw=1.5, label=f"median here {np.median(acc):.3f}")
    ax.axvline(
        paper_median, color="tab:orange", ls="--", lw=1.5, label=f"median in the paper {paper_median:.3f}"
    )
    ax.axvline(0.8, color="0.4", ls=":", lw=1)
    ax.set_xlabel("OOD accuracy (generalisation map, W ∈ [0, 5])")
    ax.set_ylabel("networks")
    ax.set_title(
        f"{int((acc > 0.8).sum())}/{acc.size} networks above 0.8 here, {paper_above}/{paper_n} in the paper",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    return fig


def generalisation_maps(target, maps: dict, *, grid_v, grid_w):
    """The target phase diagram and the networks' generalisation maps (topological fraction over
    v × W), with the disorder-averaged critical line v_c(W)."""
    plt = pyplot()
    v, w = _np(grid_v), _np(grid_w)
    panels = [("target (closed-form labels)", _np(target))] + [(k, _np(m)) for k, m in maps.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 0.8, 3.4), squeeze=False)
    ws = np.linspace(0, 4.0, 81)
    vc = np.array([critical_v(x) for x in ws])
    im = None
    for ax, (title, m) in zip(axes[0], panels):
        im = ax.imshow(
            m,
            origin="lower",
            aspect="auto",
            extent=(v[0], v[-1], w[0], w[-1]),
            vmin=0,
            vmax=1,
            cmap="viridis",
        )
        ax.plot(vc, ws, color="w", ls="--", lw=1)
        ax.set_xlabel("v (mean intracell hopping)")
        ax.set_title(title, fontsize=8)
    axes[0, 0].set_ylabel("disorder W")
    fig.colorbar(im, ax=axes[0].tolist(), label="fraction topological")
    return fig


def cam_grid(rows: list[tuple[str, list]], *, edge_columns, edge_rows):
    """rows: (label, [(image [50, 50], title), ...]) — inputs and maps, the edge region outlined."""
    plt = pyplot()
    n_cols = max(len(r) for _, r in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(1.9 * n_cols + 0.6, 2.1 * len(rows) + 0.4), squeeze=False
    )
    c0, c1 = min(edge_columns) - 0.5, max(edge_columns) + 0.5
    for i, (label, panels) in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(panels):
                ax.axis("off")
                continue
            img, title = panels[j]
            ax.imshow(_np(img), cmap="viridis")
            ax.set_title(title, fontsize=7)
            if j % 3:  # maps: outline the edge-state columns and rows
                for x in (c0, c1):
                    ax.axvline(x, color="w", lw=0.6, ls=":")
                for y in (max(edge_rows[:2]) + 0.5, min(edge_rows[2:]) - 0.5):
                    ax.axhline(y, color="w", lw=0.6, ls=":")
        axes[i, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig


def embedding_panels(rows: list[tuple[str, np.ndarray]], labels, set_w, *, kind: str):
    """rows: (network label, coordinates [n, 2]) of the clean and disordered test sets; one
    panel per set (columns: W), points coloured by the true label."""
    plt = pyplot()
    labels, set_w = _np(labels), _np(set_w)
    ws = sorted(set(set_w.tolist()))
    fig, axes = plt.subplots(
        len(rows), len(ws), figsize=(2.3 * len(ws), 2.3 * len(rows) + 0.3), squeeze=False
    )
    for i, (name, z) in enumerate(rows):
        z = _np(z)
        for j, w in enumerate(ws):
            ax = axes[i, j]
            sel = set_w == w
            for c, color, lab in ((0, "tab:blue", "trivial"), (1, "tab:red", "topological")):
                pts = z[sel & (labels == c)]
                ax.scatter(pts[:, 0], pts[:, 1], s=3, color=color, alpha=0.6, label=lab)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"W = {w:g}" + (" (fit)" if w == 0 and kind == "PCA" else ""), fontsize=8)
        axes[i, 0].set_ylabel(name, fontsize=8)
    axes[0, -1].legend(fontsize=6, markerscale=3, loc="best")
    fig.suptitle(f"{kind} of the GAP layer, fitted on the clean test set (W = 0)", fontsize=9)
    fig.tight_layout()
    return fig


def signal_scatter(signals: dict[str, tuple[np.ndarray, str]], accuracy):
    """One small scatter plot per signal: its value per network against OOD accuracy; titles
    carry the signal's Spearman ρ and 95 % interval (given as the second tuple entry)."""
    plt = pyplot()
    acc = np.asarray(accuracy, dtype=float)
    names = list(signals)
    n_cols = 4
    n_rows = math.ceil(len(names) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 2.5 * n_rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(names):
            ax.axis("off")
            continue
        values, caption = signals[names[k]]
        ax.scatter(np.asarray(values, dtype=float), acc, s=10, color="tab:blue")
        ax.set_title(f"{names[k]}\n{caption}", fontsize=7)
        ax.tick_params(labelsize=6)
        if k % n_cols == 0:
            ax.set_ylabel("OOD accuracy", fontsize=7)
    fig.tight_layout()
    return fig
