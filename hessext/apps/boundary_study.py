"""The analysis of one trained model of the decision-boundary study, shared by ``hessext demo
boundary`` and ``hessext reproduce boundary`` (Sabanayagam et al. 2023; docs/boundary-paper.md).

- :func:`load_data`: the paper's data sets and splits by name (DATASETS).
- :func:`build_model`: its architectures, seeded.
- :func:`spectrum_of`: the exact Hessian of the mean training loss (float64), every eigenpair
  with λ ≠ 0 (``hessext.curvature.range_eigh``, with a full ``eigh`` fallback), the trace,
  the top eigenpairs and the generalisation measure G_θ over all eigenvectors.
- :func:`maps_of`: what the figures show for that model: alignment maps on the input grid, the
  boundary reconstruction, the per-class alignment curves, the margin estimate, the 1-D curves.

Everything returned is a typed object (dataclasses of numbers and tensors), so the reports and
results.json are written from the same values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hessext import boundary as B
from hessext.curvature import hessian, range_eigh
from hessext.datasets import digits, toy2d
from hessext.models import MNISTCNN3, mlp

__all__ = [
    "DATASETS",
    "OUTLIER_RULE",
    "Data",
    "load_data",
    "training_labels",
    "build_model",
    "parameter_norm",
    "accuracy",
    "Spectrum",
    "spectrum_of",
    "Margin",
    "Maps",
    "maps_of",
    "plane_grid",
    "tsne",
]

_CE = nn.CrossEntropyLoss(reduction="none")

# name: (kind, classes, plotting box x0, x1, y0, y1 (the paper's), random-label seed)
DATASETS: dict[str, dict[str, Any]] = {
    "gauss": {"kind": "plane", "classes": 3, "box": (-4.0, 4.0, -4.0, 4.0), "label_seed": 28},
    "hierarchical": {"kind": "plane", "classes": 4, "box": (-4.0, 4.0, -4.0, 4.0), "label_seed": 34},
    "hierarchical2": {"kind": "plane", "classes": 2, "box": (-4.0, 4.0, -4.0, 4.0), "label_seed": 34},
    "circles": {"kind": "plane", "classes": 2, "box": (-2.0, 2.0, -2.0, 2.0), "label_seed": 28},
    "moons": {"kind": "plane", "classes": 2, "box": (-1.7, 2.3, -1.7, 2.3), "label_seed": 28},
    "checkerboard_linear": {"kind": "plane", "classes": 2, "box": (-3.0, 3.0, -4.0, 4.0), "label_seed": 28},
    "checkerboard_noisy": {"kind": "plane", "classes": 2, "box": (-3.0, 3.0, -4.0, 4.0), "label_seed": 28},
    "digits017": {"kind": "image", "classes": 3, "box": None, "label_seed": 28},
    "mnist017": {"kind": "image", "classes": 3, "box": None, "label_seed": 28},
    "intro1d": {"kind": "line", "classes": 2, "box": (0.35, 1.5), "label_seed": 28},
}

OUTLIER_RULE = (
    "outliers = the largest m ≤ 10 with λ_m / λ_(m+1) ≥ 2.5 among the positive eigenvalues "
    "sorted descending (hessext.boundary.outlier_count)"
)


@dataclass
class Data:
    """A data set of the study: x [N, ...] float32 and y [N] int64 (true labels, the paper's
    order), its train/test/validation split (toy2d.split, seed 42), kind ('plane', 'line' or
    'image'), number of classes, the plotting box and the seed of its random labels."""

    name: str
    kind: str
    num_classes: int
    x: torch.Tensor
    y: torch.Tensor
    split: toy2d.Split
    box: tuple | None
    label_seed: int


def load_data(name: str, *, mnist=None, images_per_class: int | None = None) -> Data:
    """The data set ``name`` of DATASETS, exactly as the paper defines it (hessext.datasets);
    'mnist017' reads the user's MNIST file ``mnist`` (hessext.datasets.digits.MNIST_FORMAT).
    images_per_class: for the image sets, the first that many images of each digit (None: the
    paper's 300 for MNIST, all 178 for the built-in digits)."""
    spec = DATASETS[name]
    if name == "gauss":
        x, y = toy2d.three_gaussians()
    elif name in ("hierarchical", "hierarchical2"):
        x, y = toy2d.hierarchical(classes=spec["classes"])
    elif name == "circles":
        x, y = toy2d.circles()
    elif name == "moons":
        x, y = toy2d.moons()
    elif name.startswith("checkerboard_"):
        x, y = toy2d.checkerboard(layout=name.split("_", 1)[1])
    elif name == "digits017":
        x, y = digits.digits017(per_class=images_per_class or 178)
    elif name == "mnist017":
        if mnist is None:
            raise ValueError("load_data: 'mnist017' needs the path of an MNIST file (mnist=)")
        x, y = digits.mnist017(mnist, per_class=images_per_class or 300)
    elif name == "intro1d":
        x, y = toy2d.intro1d()
    else:
        raise KeyError(name)
    fractions = (1.0, 0.0, 0.0) if name == "intro1d" else (0.5, 0.2, 0.3)
    return Data(
        name,
        spec["kind"],
        spec["classes"],
        x,
        y,
        toy2d.split(x, y, fractions),
        spec["box"],
        spec["label_seed"],
    )


def training_labels(data: Data, protocol: str) -> torch.Tensor:
    """The labels the model is trained on: the true training labels, or for 'random_labels' the
    training part of the paper's fixed permutation of the whole set's labels. [n_train] int64."""
    if protocol != "random_labels":
        return data.split.y_train
    permuted = toy2d.permuted_labels(data.y, data.label_seed)
    fractions = (1.0, 0.0, 0.0) if data.name == "intro1d" else (0.5, 0.2, 0.3)
    return toy2d.split(data.x, permuted, fractions).y_train


def build_model(architecture: dict, data: Data, seed: int) -> nn.Module:
    """The architecture of a config (hessext/apps/reproduce/boundary_configs.py), initialised
    from ``seed``: mlp(D, w, w, C) (``layers`` hidden layers of width w, default 2) or the
    image CNN (hessext.models.MNISTCNN3)."""
    if architecture["name"] == "cnn":
        return MNISTCNN3(data.num_classes, seed=seed)
    width, layers = architecture["width"], architecture.get("layers", 2)
    return mlp(data.x.shape[1], *([width] * layers), data.num_classes, seed=seed)


def parameter_norm(model: nn.Module) -> float:
    """‖θ‖₂ over all parameters."""
    return float(torch.cat([p.detach().double().reshape(-1) for p in model.parameters()]).norm())


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` [N, ...] whose argmax prediction is ``y`` [N] (model in eval mode)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float((model(x).argmax(1) == y).double().mean())
    finally:
        model.train(was)


# ---------------------------------------------------------------------------------------------
# spectrum and generalisation measure


@dataclass
class Spectrum:
    """The exact Hessian spectrum of one model and G_θ.

    num_params: P; rank: eigenvalues with λ ≠ 0 to working precision (range_eigh; P when the
    full eigh ran); method: 'range' or 'full'; residual: max ‖Hv − λv‖ / |λ|_max.
    eigenvalues: [rank] ascending (the rest of the P eigenvalues are 0); trace: tr(H) from the
    diagonal (float64); top_values [k] descending, top_vectors [P, k] float64.
    g_theta, g_epsilon, g_n_aligned, g_outside, g_determined: hessext.boundary.GeneralisationMeasure
    over all eigenvectors (determined: the count is exact, see there); max_alignment: [rank]
    max_n |a_i(x_n)| per eigenvector (order of ``eigenvalues``); random_maxima: [5].
    seconds: assembly + eigendecomposition + G_θ.
    """

    num_params: int
    rank: int
    method: str
    residual: float
    eigenvalues: torch.Tensor
    trace: float
    top_values: torch.Tensor
    top_vectors: torch.Tensor
    g_theta: float
    g_epsilon: float
    g_n_aligned: int
    g_outside: float
    g_determined: bool
    max_alignment: torch.Tensor
    random_maxima: torch.Tensor
    seconds: float

    @property
    def lambda_max(self) -> float:
        return float(self.top_values[0])

    def spectrum(self) -> torch.Tensor:
        """All P eigenvalues ascending [P] (the null space as zeros)."""
        zeros = torch.zeros(self.num_params - self.rank, dtype=torch.float64)
        return torch.cat([self.eigenvalues, zeros]).sort().values

    def outliers(self) -> int:
        """The number of outliers (OUTLIER_RULE)."""
        return B.outlier_count(self.spectrum().flip(0)[:64])


def spectrum_of(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    k_top: int = 40,
    g_seed: int = 42,
    progress: bool | None = None,
) -> Spectrum:
    """The exact Hessian of the mean cross-entropy over (x_train, y_train) at the model's
    parameters (float64, no regulariser: the paper's), all its eigenpairs with λ ≠ 0, and G_θ
    with ε from 5 random unit directions seeded ``g_seed``. If the eigenvectors found do not
    determine G_θ (the training gradients stick out of their span by ε or more), the full
    eigendecomposition is computed instead."""
    t0 = time.perf_counter()
    H = hessian(model, _CE, (x_train, y_train), progress=progress)
    A = H.dense()
    trace = float(A.diagonal().sum())
    eig = range_eigh(A)
    gm = B.generalisation_measure(model, x_train, eig.eigenvectors, seed=g_seed, progress=progress)
    if not gm.determined:
        values, vectors = torch.linalg.eigh(A)
        res = float((A @ vectors - vectors * values).norm(dim=0).max() / values.abs().max())
        eig = type(eig)(values, vectors, A.shape[0], A.shape[0], res, 0, "full", eig.rtol)
        gm = B.generalisation_measure(model, x_train, vectors, seed=g_seed, progress=progress)
    del H, A
    k = min(k_top, eig.rank)
    top_values, top_vectors = eig.top(k)
    return Spectrum(
        num_params=eig.size,
        rank=eig.rank,
        method=eig.method,
        residual=eig.residual,
        eigenvalues=eig.eigenvalues.cpu(),
        trace=trace,
        top_values=top_values.cpu(),
        top_vectors=top_vectors.cpu().contiguous(),
        g_theta=gm.g_theta,
        g_epsilon=gm.epsilon,
        g_n_aligned=gm.n_aligned,
        g_outside=gm.outside,
        g_determined=gm.determined,
        max_alignment=gm.max_alignment,
        random_maxima=gm.random_maxima,
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------------------------------------
# what the figures show


@dataclass
class Margin:
    """hessext.boundary.margin_estimate, summarised: margin = min(‖x_max − x_b‖, ‖x_min − x_b‖);
    cos2 = cos²(g(x_b), v_1) reached; x_b, x_max, x_min: [D]."""

    margin: float
    cos2: float
    x_b: torch.Tensor
    x_max: torch.Tensor
    x_min: torch.Tensor


@dataclass
class Maps:
    """The figure data of one model.

    class_alignment: [C, m] the mean over the training points of each class of a_i, i ≤ m = 10·C
    (fewer if the rank is smaller); point_alignment: [N_train, m] a_i of every training point.
    Plane sets: extent (x0, x1, y0, y1), resolution R, grid_alignment [R·R, g] a_1 … a_g on the
    grid, grid_prediction [R·R] the model's class, reconstruction [R·R] R(x) = Σ_{i≤k_rec} λ_i a_i,
    sign_agreement: fraction of the grid where the sign pattern of (a_1 … a_{C−1}) names the
    predicted class (hessext.boundary.sign_region_agreement), margin (when asked for).
    Line sets (intro): line_x [M], line_logits [M, C], line_gradients [M, P] (reinforcing
    gradients), line_alignment [M, 2].
    """

    class_alignment: torch.Tensor
    point_alignment: torch.Tensor
    extent: tuple | None = None
    resolution: int = 0
    grid_alignment: torch.Tensor | None = None
    grid_prediction: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    k_rec: int = 0
    sign_agreement: float | None = None
    margin: Margin | None = None
    line_x: torch.Tensor | None = None
    line_logits: torch.Tensor | None = None
    line_gradients: torch.Tensor | None = None
    line_alignment: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


def plane_grid(extent: tuple, resolution: int) -> B.Grid:
    """hessext.boundary.grid over exactly the box ``extent`` = (x0, x1, y0, y1)."""
    x0, x1, y0, y1 = extent
    return B.grid(torch.tensor([[x0, y0], [x1, y1]], dtype=torch.float64), resolution, padding=0.0)


def maps_of(
    model: nn.Module,
    data: Data,
    spectrum: Spectrum,
    *,
    resolution: int = 100,
    n_maps: int = 6,
    margin_steps: int = 0,
    margin_seed: int = 0,
    progress: bool | None = None,
) -> Maps:
    """The figure data of ``model`` (trained on ``data``) from its ``spectrum`` (see Maps).
    margin_steps > 0: also the margin estimate (hessext.boundary.margin_estimate, that many Adam
    steps of size 0.01 from the midpoint start)."""
    C = data.num_classes
    x_train, y_train = data.split.x_train, data.split.y_train
    V = spectrum.top_vectors
    m = min(10 * C, V.shape[1])
    a = B.alignment(model, x_train, V[:, :m], progress=progress)
    class_mean = torch.stack([a[y_train == c].mean(0) for c in range(C)])
    maps = Maps(class_alignment=class_mean.float(), point_alignment=a.float())
    if data.kind == "plane" and data.box is not None:
        g = plane_grid(data.box, resolution)
        n = min(n_maps, V.shape[1])
        ga = B.alignment(model, g.points, V[:, :n], progress=progress)
        model.eval()
        with torch.no_grad():
            pred = model(g.points.float()).argmax(1)
        k_rec = min(n, max(spectrum.outliers(), C - 1, 1))
        maps.extent, maps.resolution = data.box, resolution
        maps.grid_alignment = ga.float()
        maps.grid_prediction = pred.to(torch.int8)
        maps.reconstruction = (ga[:, :k_rec] @ spectrum.top_values[:k_rec].to(ga)).float()
        maps.k_rec = k_rec
        maps.sign_agreement = B.sign_region_agreement(ga[:, : max(C - 1, 1)], pred).agreement
        if margin_steps:
            me = B.margin_estimate(model, x_train, V[:, 0], steps=margin_steps, lr=0.01, seed=margin_seed)
            maps.margin = Margin(me.margin, me.cos2, me.x_b.float(), me.x_max.float(), me.x_min.float())
    elif data.kind == "line" and data.box is not None:
        lo, hi = data.box
        xs = torch.linspace(lo, hi, 100, dtype=torch.float64).unsqueeze(1)
        model.eval()
        with torch.no_grad():
            maps.line_logits = model(xs.float()).float()
        maps.line_x = xs[:, 0].float()
        maps.line_gradients = B.reinforcing_gradients(model, xs).float()
        maps.line_alignment = B.alignment(model, xs, V[:, :2]).float()
    return maps


def tsne(x_train: torch.Tensor, seed: int = 42) -> torch.Tensor:
    """The paper's t-SNE of the image set: scikit-learn TSNE (2 components, random_state 42)
    of the flattened training images x_train [N, ...] → [N, 2] float32."""
    # scikit-learn: the documented lazy load (python_tests/test_architecture.py, ~1 s import)
    from sklearn.manifold import TSNE

    flat = x_train.reshape(len(x_train), -1).double().numpy()
    perplexity = min(30.0, (len(flat) - 1) / 3)
    emb = TSNE(n_components=2, random_state=seed, perplexity=perplexity).fit_transform(flat)
    return torch.from_numpy(emb).float()
