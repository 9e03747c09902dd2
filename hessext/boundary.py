"""Hessian eigenvectors and the decision boundary (Sabanayagam, Behrens, Adomaityte, Dawid 2023;
docs/methods.md §6).

The reinforcing gradient of an input x is g(x) = ∇θ CE(f(x), ŷ(x)) with ŷ(x) = argmax f(x), the
model's own prediction: it needs no label, so it can be evaluated on a grid over input space.
Its alignment with a unit eigenvector v_i of the training-loss Hessian,
a_i(x) = v_iᵀ g(x) / ‖g(x)‖, changes sign across the decision boundary; R(x) = Σ_{i≤k} λ_i a_i(x)
reconstructs it. The generalisation measure G_θ counts the eigenvectors that some training
gradient aligns with better than a random direction does, and the margin estimate looks for an
input whose gradient is parallel to v_1.

Everything is batched: one per-sample-gradient pass over all inputs (``hessext.PerSampleGrads``,
whose products with eigenvectors never form the N×P gradient matrix for MLPs) and one product
with all eigenvectors at once. Every function leaves the model exactly as it found it
(parameters, .grad, hooks, train/eval mode) and runs it in eval mode.

Precision: everything runs in float64 by default (``dtype=None``), also for a float32 model.
What matters here is the DIRECTION of g(x), and for confidently classified inputs float32
loses it: the logit gradient's entry p − 1 rounds to 0 once 1 − p < 6e-8, so most of a grid
away from the boundary would get rounding noise (or a zero alignment) instead of a direction.
Pass dtype=torch.float32 to trade that for speed and memory.

Shapes: x [N, D...] inputs (D = 2 for the toy sets), eigenvectors V [P, k] (unit columns, in
``model.named_parameters()`` order over the chosen ``params``, as ``hessext.hessian`` returns
them), eigenvalues [k].
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from hessext._internal.contract import check_inputs, forward_or_explain
from hessext._internal.guard import check_model, grad_mode, preserved
from hessext._internal.params import flat_parameters, num_params
from hessext._internal.progress import progress_bar
from hessext.per_sample import PerSampleGrads, per_sample_grads

__all__ = [
    "predicted_labels",
    "reinforcing_gradients",
    "reinforcing_gradient_operator",
    "alignment",
    "boundary_reconstruction",
    "Grid",
    "grid",
    "GeneralisationMeasure",
    "generalisation_measure",
    "margin_objective",
    "MarginEstimate",
    "margin_estimate",
    "outlier_count",
    "RegionAgreement",
    "sign_region_agreement",
]

_CE = nn.CrossEntropyLoss(reduction="none")


# ---------------------------------------------------------------------------------------------
# validation


def _check_model_inputs(fn: str, model, x) -> tuple[list[str], list[torch.Tensor]]:
    check_model(model, fn)
    check_inputs(x, fn, model=model, name="x", min_dim=2)
    return flat_parameters(model, None)


def _check_vectors(fn: str, name: str, V, P: int) -> torch.Tensor:
    """V [P] or [P, k] → [P, k] float64."""
    if not isinstance(V, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor [P, k], got {type(V).__name__}")
    if V.dim() == 1:
        V = V.unsqueeze(1)
    if V.dim() != 2 or V.shape[0] != P or V.shape[1] == 0:
        raise ValueError(
            f"{fn}: {name} must be [P={P}, k] (columns are eigenvectors over the "
            f"model's parameters), got shape {tuple(V.shape)}"
        )
    if not V.is_floating_point():
        raise TypeError(f"{fn}: {name} must be floating point, got {V.dtype}")
    if not bool(torch.isfinite(V).all()):
        raise ValueError(f"{fn}: {name} contains non-finite values (nan or inf)")
    return V


def _working_dtype(model, params, dtype):
    if dtype is None:
        return torch.float64
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


# ---------------------------------------------------------------------------------------------
# reinforcing gradients and alignment


def predicted_labels(model: nn.Module, x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """ŷ(x) = argmax_c f_c(x): [N] int64, the model run in eval mode at ``dtype`` (default: the
    parameters' dtype), left untouched."""
    fn = "predicted_labels"
    names, tensors = _check_model_inputs(fn, model, x)
    dtype = dtype or tensors[0].dtype
    state = {
        k: v.detach().to(dtype) if v.is_floating_point() else v.detach()
        for k, v in [*model.named_parameters(), *model.named_buffers()]
    }
    with preserved(model), torch.no_grad():
        # a copy: a model may write its input in place
        out = forward_or_explain(model, state, x.detach().to(tensors[0].device, dtype).clone(), fn)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"{fn}: the model must return logits [N, C]; for inputs "
            f"{tuple(x.shape)} it returned {getattr(out, 'shape', type(out).__name__)}"
        )
    return out.argmax(dim=1)


@grad_mode
def reinforcing_gradient_operator(
    model: nn.Module,
    x: torch.Tensor,
    *,
    params=None,
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
    check_finite: bool = True,
) -> PerSampleGrads:
    """The reinforcing gradients of ``x`` [N, ...] as a lazy ``PerSampleGrads`` operator G
    [N, P] (``G @ V``, ``G.row_norms()``, ``G.materialize()``): row n = ∇θ CE(f(x_n), ŷ(x_n)).
    One forward pass for the predictions and one forward + backward pass for the gradients.
    check_finite=False keeps the rows of inputs where the model's output (hence the gradient)
    is not finite, instead of refusing them."""
    _check_model_inputs("reinforcing_gradient_operator", model, x)
    dtype = _working_dtype(model, params, dtype)
    labels = predicted_labels(model, x, dtype=dtype)
    return PerSampleGrads(
        model, _CE, x, labels, params=params, dtype=dtype, progress=progress, check_finite=check_finite
    )


@grad_mode
def reinforcing_gradients(
    model: nn.Module, x: torch.Tensor, *, params=None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """g(x_n) = ∇θ CE(f(x_n), argmax f(x_n)) for every input: [N, P] (columns in
    ``named_parameters()`` order over ``params``; dtype default float64, see the module doc).

    x: [N, ...] inputs, no labels needed. One per-sample-gradient pass (not one backward per
    point). For many inputs prefer ``alignment`` or ``reinforcing_gradient_operator``, which
    never form the N×P matrix."""
    _check_model_inputs("reinforcing_gradients", model, x)
    dtype = _working_dtype(model, params, dtype)
    labels = predicted_labels(model, x, dtype=dtype)
    return per_sample_grads(model, _CE, x, labels, params=params, dtype=dtype)


def _default_cutoff(dtype: torch.dtype) -> float:
    # With p the predicted class's probability, the logit gradient's entry p - 1 is computed
    # with an absolute error of about one ulp, i.e. a relative error ~eps/(1-p), and ‖g‖ scales
    # with (1-p). A gradient r times smaller than the largest one therefore has a direction
    # error of roughly eps/r; keeping only r ≥ sqrt(eps) bounds that error by sqrt(eps)
    # (1.5e-8 in float64, 3.5e-4 in float32).
    return math.sqrt(torch.finfo(dtype).eps)


def _cosines(
    G: PerSampleGrads, V: torch.Tensor, eps: float | None, who: str = "alignment"
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """cos(g_n, v_i) = v_iᵀ g_n / (‖g_n‖ ‖v_i‖) [N, k] with rows whose ‖g_n‖ < eps · max‖g‖ set
    to 0, the norms [N], and the absolute norm cutoff used. A row whose gradient is not finite
    (the model's output is not finite at that input) is NaN, leaves the others as they are
    (the cutoff is relative to the largest finite norm), and is named in a RuntimeWarning."""
    if eps is None:
        eps = _default_cutoff(G.dtype)
    if not eps >= 0:
        raise ValueError(f"alignment: eps must be >= 0 (relative to the largest gradient norm), got {eps}")
    V = V.to(device=G.device, dtype=G.dtype)
    proj = G @ V  # [N, k]
    norms = G.row_norms()  # [N]
    finite = torch.isfinite(norms) & torch.isfinite(proj).all(1)
    cutoff = float(eps) * float(norms[finite].max()) if bool(finite.any()) else 0.0
    vnorm = torch.linalg.vector_norm(V, dim=0)  # [k]
    keep = finite & (norms > cutoff)
    denom = torch.where(keep, norms, torch.ones_like(norms)).unsqueeze(1) * vnorm.unsqueeze(0)
    cos = torch.where(keep.unsqueeze(1), proj / denom, torch.zeros_like(proj))
    if not bool(finite.all()):
        bad = (~finite).nonzero()[:, 0].tolist()
        cos[~finite] = float("nan")
        shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
        warnings.warn(
            f"{who}: the reinforcing gradients of {len(bad)} of {norms.numel()} inputs (indices "
            f"[{shown}]) are not finite (the model's output is not finite there); their rows are "
            "nan, the others are unaffected",
            RuntimeWarning,
            stacklevel=3,
        )
    return cos, norms, cutoff


@grad_mode
def alignment(
    model: nn.Module,
    x: torch.Tensor,
    eigenvectors: torch.Tensor,
    *,
    eps: float | None = None,
    params=None,
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """a_i(x_n) = v_iᵀ g(x_n) / (‖g(x_n)‖ ‖v_i‖) for every input and eigenvector: [N, k].

    x: [N, ...] inputs (e.g. a ``grid(...).points``); eigenvectors: [P, k] (or [P]) columns over
    the model's parameters (``params``), e.g. from ``Hessian.top_eigenpairs(k)``; they are
    normalised here, so unit length is not required.

    Zero gradients: a confidently classified input has ‖g(x)‖ → 0 and a direction dominated by
    rounding. a_i(x) is defined as 0 wherever ‖g(x)‖ < eps · max_n ‖g(x_n)‖ (relative to the
    largest norm in this batch). The default eps = sqrt(machine epsilon of the working dtype)
    bounds the rounding error of the directions kept by about eps itself (1.5e-8 in float64).
    dtype: working dtype (default float64, see the module doc). An input where the model's
    output is not finite (e.g. outside a log's domain) gets a row of NaN, and a RuntimeWarning
    names it; the other rows are unaffected.

    Cost: one per-sample-gradient pass and one product G @ V; for MLPs the [N, P] gradient
    matrix is never formed, so large grids are fine."""
    fn = "alignment"
    _check_model_inputs(fn, model, x)
    V = _check_vectors(fn, "eigenvectors", eigenvectors, num_params(model, params))
    G = reinforcing_gradient_operator(
        model, x, params=params, dtype=dtype, progress=progress, check_finite=False
    )
    return _cosines(G, V, eps)[0]


@grad_mode
def boundary_reconstruction(
    model: nn.Module,
    x: torch.Tensor,
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    k: int | None = None,
    *,
    eps: float | None = None,
    params=None,
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """R(x_n) = Σ_{i≤k} λ_i a_i(x_n): [N]. Its sign changes trace the decision boundary.

    eigenvalues: [≥k]; eigenvectors: [P, ≥k] (the first k columns are used; default k = all
    given). With alignments already computed, R is just ``a[:, :k] @ eigenvalues[:k]``."""
    fn = "boundary_reconstruction"
    _check_model_inputs(fn, model, x)
    V = _check_vectors(fn, "eigenvectors", eigenvectors, num_params(model, params))
    if not isinstance(eigenvalues, torch.Tensor) or eigenvalues.dim() != 1:
        raise ValueError(
            f"{fn}: eigenvalues must be a 1-D tensor [k], got "
            f"{getattr(eigenvalues, 'shape', type(eigenvalues).__name__)}"
        )
    if k is None:
        k = V.shape[1]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= min(V.shape[1], eigenvalues.shape[0]):
        raise ValueError(
            f"{fn}: k must be an int in [1, {min(V.shape[1], eigenvalues.shape[0])}] "
            f"(eigenvalues {tuple(eigenvalues.shape)}, eigenvectors {tuple(V.shape)}), got {k!r}"
        )
    a = alignment(model, x, V[:, :k], eps=eps, params=params, dtype=dtype, progress=progress)
    return a @ eigenvalues[:k].to(a)


class Grid(NamedTuple):
    """A regular 2-D grid: points [R*R, 2] (x varies fastest), and xx, yy [R, R] from
    ``torch.meshgrid(xs, ys, indexing='xy')``, so ``values.reshape(R, R)`` has rows along y
    (what ``imshow(..., origin='lower', extent=extent)`` expects); extent = (x0, x1, y0, y1)."""

    points: torch.Tensor
    xx: torch.Tensor
    yy: torch.Tensor
    extent: tuple[float, float, float, float]

    def reshape(self, values: torch.Tensor) -> torch.Tensor:
        """[R*R, ...] values at ``points`` → [R, R, ...] laid out like xx, yy."""
        return values.reshape(*self.xx.shape, *values.shape[1:])


def grid(x_train: torch.Tensor, resolution: int = 100, padding: float = 0.1) -> Grid:
    """A resolution×resolution grid over the bounding box of 2-D data ``x_train`` [N, 2],
    widened on every side by ``padding`` × the box's extent along that axis (float64 points;
    cast them to the model's dtype when needed — ``alignment`` does)."""
    fn = "grid"
    if (
        not isinstance(x_train, torch.Tensor)
        or x_train.dim() != 2
        or x_train.shape[1] != 2
        or x_train.shape[0] == 0
    ):
        raise ValueError(
            f"{fn}: x_train must be 2-D points [N, 2], got "
            f"{getattr(x_train, 'shape', type(x_train).__name__)}"
        )
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 2:
        raise ValueError(f"{fn}: resolution must be an int >= 2, got {resolution!r}")
    if not padding >= 0:
        raise ValueError(f"{fn}: padding must be >= 0 (a fraction of the data's extent), got {padding}")
    x = x_train.detach().to(torch.float64).cpu()
    lo, hi = x.min(0).values, x.max(0).values
    span = (hi - lo).clamp_min(1e-12)
    lo, hi = lo - padding * span, hi + padding * span
    xs = torch.linspace(float(lo[0]), float(hi[0]), resolution, dtype=torch.float64)
    ys = torch.linspace(float(lo[1]), float(hi[1]), resolution, dtype=torch.float64)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1).to(x_train.device)
    return Grid(points, xx, yy, (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])))


# ---------------------------------------------------------------------------------------------
# generalisation measure


@dataclass
class GeneralisationMeasure:
    """G_θ and how it was obtained.

    g_theta: (1/P)·#{i : max_n |a_i(x_n)| ≥ epsilon} over the eigenvectors given.
    epsilon: mean over the random directions of random_maxima.
    random_maxima: [n_random] max_n |cos(g(x_n), r_j)| for seeded random unit directions r_j.
    max_alignment: [k] max_n |a_i(x_n)| for each eigenvector given.
    n_aligned: the count in the numerator; num_params: P; num_eigenvectors: k.
    outside: max_n ‖ĝ_n − V Vᵀ ĝ_n‖, how much of the unit training gradients ĝ_n lies outside
    the span of the k given (orthonormal) eigenvectors.
    complete: k == P. determined: complete, or outside < epsilon. With k < P, g_theta counts only
    the k given eigenvectors (still divided by P), a LOWER bound of the full G_θ; but every
    missing eigenvector v is orthogonal to the given ones, so |ĝ_n · v| ≤ outside for all n: if
    outside < ε no completion of the basis can add to the count, and g_theta IS the G_θ of every
    eigenbasis containing the given vectors (e.g. all eigenvectors with λ ≠ 0 from
    ``hessext.curvature.range_eigh``, the rest spanning the null space).
    """

    g_theta: float
    epsilon: float
    random_maxima: torch.Tensor
    max_alignment: torch.Tensor
    n_aligned: int
    num_params: int
    num_eigenvectors: int
    outside: float = float("nan")

    @property
    def complete(self) -> bool:
        return self.num_eigenvectors == self.num_params

    @property
    def determined(self) -> bool:
        return self.complete or self.outside < self.epsilon


def generalisation_measure(
    model: nn.Module,
    x_train: torch.Tensor,
    eigenvectors: torch.Tensor,
    *,
    n_random: int = 5,
    seed: int = 0,
    eps: float | None = None,
    params=None,
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
) -> GeneralisationMeasure:
    """The generalisation measure G_θ = (1/P)·#{i : max_n |a_i(x_n)| ≥ ε} (docs/methods.md §6; the
    max-version behind the paper's figures).

    x_train: [N, ...] training inputs (their reinforcing gradients are used: no labels).
    eigenvectors: [P, k] orthonormal columns: all P eigenvectors of the Hessian for the paper's
    G_θ (e.g. ``H.eigh()[1]``), or those with λ ≠ 0 (``range_eigh``); with k < P the count runs
    over the given ones and is still divided by P: a lower bound, and the exact G_θ whenever
    ``determined`` (see ``GeneralisationMeasure``).
    ε = mean over ``n_random`` random unit directions r_j (standard normal in R^P, normalised;
    drawn in float64 from torch.Generator().manual_seed(seed)) of max_n |cos(g(x_n), r_j)|.
    eps: the zero-gradient cutoff of ``alignment``. One gradient pass and one product with
    [V, r_1 … r_m]."""
    fn = "generalisation_measure"
    _check_model_inputs(fn, model, x_train)
    P = num_params(model, params)
    V = _check_vectors(fn, "eigenvectors", eigenvectors, P)
    if not isinstance(n_random, int) or isinstance(n_random, bool) or n_random < 1:
        raise ValueError(f"{fn}: n_random must be a positive int, got {n_random!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"{fn}: seed must be an int, got {type(seed).__name__}")
    gen = torch.Generator().manual_seed(seed)
    R = torch.randn(P, n_random, generator=gen, dtype=torch.float64)
    R = R / torch.linalg.vector_norm(R, dim=0, keepdim=True)
    G = reinforcing_gradient_operator(model, x_train, params=params, dtype=dtype, progress=progress)
    k = V.shape[1]
    cos, _, _ = _cosines(G, torch.cat([V.to(R.device, torch.float64), R], dim=1), eps)
    best = cos.abs().max(dim=0).values.to(torch.float64).cpu()
    max_alignment, random_maxima = best[:k], best[k:]
    # rows of cos set to 0 (vanishing gradients) have no direction and no part outside V
    inside = (cos[:, :k].to(torch.float64) ** 2).sum(dim=1)
    kept = cos.abs().amax(dim=1) > 0
    outside = float((1 - inside[kept]).clamp_min(0).sqrt().max()) if bool(kept.any()) else 0.0
    epsilon = float(random_maxima.mean())
    n_aligned = int((max_alignment >= epsilon).sum())
    return GeneralisationMeasure(
        n_aligned / P, epsilon, random_maxima, max_alignment, n_aligned, P, k, outside
    )


# ---------------------------------------------------------------------------------------------
# margin estimate


def _functional_state(model, params, dtype, device):
    names, _ = flat_parameters(model, params)
    chosen = set(names)

    def cast(t):
        return t.detach().to(device=device, dtype=dtype) if t.is_floating_point() else t.detach()

    theta = {k: cast(p) for k, p in model.named_parameters() if k in chosen}
    const = {k: cast(p) for k, p in model.named_parameters() if k not in chosen}
    const.update({k: cast(b) for k, b in model.named_buffers()})
    return names, theta, const


def _make_cos2(model, names, theta, const, v):
    """x [D...] ↦ cos²(g(x), v) with g(x) the reinforcing gradient, differentiable in x."""
    vhat = v / torch.linalg.vector_norm(v)

    def loss(th, x):
        out = torch.func.functional_call(model, {**const, **th}, (x.unsqueeze(0),))
        # ŷ(x) is piecewise constant in x: no gradient flows through the argmax
        return F.cross_entropy(out, out.detach().argmax(dim=1))

    def cos2(x):
        g = torch.func.grad(loss)(theta, x)
        flat = torch.cat([g[k].reshape(-1) for k in names])
        sq = flat @ flat
        return (flat @ vhat) ** 2 / torch.where(sq > 0, sq, torch.ones_like(sq))

    return cos2


def margin_objective(
    model: nn.Module, x: torch.Tensor, v1: torch.Tensor, *, params=None, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The margin estimate's objective J(x) = (cos²(g(x), v1) − 1)² at each input, with its
    input gradient: returns (J [N], cos² [N], ∂J/∂x [N, ...]).

    g(x) is the reinforcing gradient; ∂J/∂x differentiates through g (second order, torch.func
    grad of a function of a parameter gradient, vmapped over the inputs). cos² is 0 where g = 0."""
    fn = "margin_objective"
    _check_model_inputs(fn, model, x)
    v1 = _check_vectors(fn, "v1", v1, num_params(model, params))[:, 0]
    dtype = _working_dtype(model, params, dtype)
    device = flat_parameters(model, params)[1][0].device
    names, theta, const = _functional_state(model, params, dtype, device)
    cos2 = _make_cos2(model, names, theta, const, v1.to(device=device, dtype=dtype))

    def objective(xi):
        c = cos2(xi)
        return (c - 1) ** 2, c

    with preserved(model):
        grads, (J, c) = torch.func.vmap(torch.func.grad_and_value(objective, has_aux=True))(
            x.detach().to(device=device, dtype=dtype)
        )
    return J, c, grads


@dataclass
class MarginEstimate:
    """Result of ``margin_estimate``.

    x_b: [D...] the input found, whose reinforcing gradient is (nearly) parallel to v1.
    cos2: cos²(g(x_b), v1) at the end (1 = parallel); objective: (cos2 − 1)².
    x_max, x_min: [D...] the training inputs of largest and smallest a_1; a1_max, a1_min their a_1.
    margin: min(‖x_max − x_b‖, ‖x_min − x_b‖).
    x_start: [D...] where the optimisation began.
    trace: {'objective': [steps+1], 'cos2': [steps+1], 'x': [steps+1, D...]} along the way
    (entry 0 is the start).
    """

    x_b: torch.Tensor
    cos2: float
    objective: float
    x_max: torch.Tensor
    x_min: torch.Tensor
    a1_max: float
    a1_min: float
    margin: float
    x_start: torch.Tensor
    trace: dict = field(default_factory=dict)


def margin_estimate(
    model: nn.Module,
    x_train: torch.Tensor,
    v1: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 0.01,
    seed: int = 0,
    start: str | torch.Tensor = "midpoint",
    jitter: float = 1e-3,
    params=None,
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
) -> MarginEstimate:
    """Margin estimate (docs/methods.md §6): find x_b whose reinforcing gradient is parallel to v1 by
    minimising J(x) = (cos²(g(x), v1) − 1)² with Adam (``steps`` steps of size ``lr``, in input
    units), then margin = min(‖x_max − x_b‖, ‖x_min − x_b‖) with x_max, x_min the training
    inputs of largest and smallest a_1 = alignment with v1.

    x_train: [N, D...]; v1: [P] (or [P, 1]) the top Hessian eigenvector.
    start: 'midpoint' (of x_max and x_min, which lies between the two most strongly and
    oppositely aligned training points), 'max_alignment' (the training point of largest |a_1|),
    or an explicit input [D...]. seed: a Gaussian jitter of ``jitter`` × the per-coordinate std
    of x_train is added to the start (seeded; jitter=0 for none), so restarts from other seeds
    explore other local minima. The best iterate (lowest J) is returned as x_b."""
    fn = "margin_estimate"
    _check_model_inputs(fn, model, x_train)
    P = num_params(model, params)
    v1 = _check_vectors(fn, "v1", v1, P)
    if v1.shape[1] != 1:
        raise ValueError(f"{fn}: v1 must be one eigenvector [P={P}], got shape {tuple(v1.shape)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"{fn}: steps must be an int >= 0, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"{fn}: lr must be > 0, got {lr}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"{fn}: seed must be an int, got {type(seed).__name__}")
    dtype = _working_dtype(model, params, dtype)
    device = flat_parameters(model, params)[1][0].device

    a1 = alignment(model, x_train, v1, params=params, dtype=dtype)[:, 0]
    i_max, i_min = int(a1.argmax()), int(a1.argmin())
    xt = x_train.detach().to(device=device, dtype=dtype)
    x_max, x_min = xt[i_max], xt[i_min]
    if isinstance(start, torch.Tensor):
        if start.shape != xt.shape[1:]:
            raise ValueError(
                f"{fn}: start must be one input of shape {tuple(xt.shape[1:])}, got {tuple(start.shape)}"
            )
        x0 = start.detach().to(device=device, dtype=dtype).clone()
    elif start == "midpoint":
        x0 = (x_max + x_min) / 2
    elif start == "max_alignment":
        x0 = xt[int(a1.abs().argmax())].clone()
    else:
        raise ValueError(f"{fn}: start must be 'midpoint', 'max_alignment' or an input tensor, got {start!r}")
    if jitter:
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
        scale = xt.std(dim=0) if len(xt) > 1 else torch.ones_like(x0)
        x0 = x0 + jitter * scale * noise

    names, theta, const = _functional_state(model, params, dtype, device)
    cos2 = _make_cos2(model, names, theta, const, v1[:, 0].to(device=device, dtype=dtype))

    def objective(xi):
        c = cos2(xi)
        return (c - 1) ** 2, c

    step = torch.func.grad_and_value(objective, has_aux=True)
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    objs, cs, xs = [], [], []
    with preserved(model):
        for i in progress_bar(range(steps + 1), total=steps + 1, desc="margin", progress=progress):
            g, (J, c) = step(x.detach())
            objs.append(float(J))
            cs.append(float(c))
            xs.append(x.detach().clone())
            if i < steps:
                x.grad = g
                opt.step()
    best = min(range(len(objs)), key=objs.__getitem__)
    x_b = xs[best]
    margin = min(float(torch.linalg.vector_norm(x_max - x_b)), float(torch.linalg.vector_norm(x_min - x_b)))
    trace = {
        "objective": torch.tensor(objs, dtype=torch.float64),
        "cos2": torch.tensor(cs, dtype=torch.float64),
        "x": torch.stack(xs),
    }
    return MarginEstimate(
        x_b, cs[best], objs[best], x_max, x_min, float(a1[i_max]), float(a1[i_min]), margin, x0, trace
    )


# ---------------------------------------------------------------------------------------------
# spectrum outliers


def outlier_count(eigenvalues: torch.Tensor, *, gap: float = 2.5, max_outliers: int = 10) -> int:
    """Number of outlier eigenvalues at the top of a Hessian spectrum.

    Rule: sort the positive eigenvalues descending, λ_1 ≥ λ_2 ≥ …, and return the largest
    m ≤ max_outliers with λ_m / λ_{m+1} ≥ ``gap`` (0 if there is none). Inside the bulk the
    spectrum is dense, so consecutive ratios are close to 1; the last large jump among the top
    eigenvalues separates the outliers from the bulk. ``max_outliers`` keeps the rule away from
    the tail near zero, where ratios of tiny eigenvalues are meaningless. A well-trained C-class
    classifier with separated classes shows C − 1 outliers (Sabanayagam et al. 2023).

    Why gap = 2.5: on the three-Gaussian MLPs (2-100-100-3, seeds 0 and 1, 400 and 1000
    epochs) the ratios inside the bulk (λ_3 … λ_12) stayed ≤ 1.9 while λ_2/λ_3 was 3.2 – 4.8;
    the paper's published spectrum (0.154, 0.023, then ≤ 0.009) has λ_2/λ_3 ≥ 2.56.

    eigenvalues: [K] in any order (e.g. all P, or the top k from Lanczos; need K > m to see the
    gap after the m-th)."""
    fn = "outlier_count"
    if not isinstance(eigenvalues, torch.Tensor) or eigenvalues.dim() != 1 or eigenvalues.numel() < 2:
        raise ValueError(
            f"{fn}: eigenvalues must be a 1-D tensor with at least 2 entries, got "
            f"{getattr(eigenvalues, 'shape', type(eigenvalues).__name__)}"
        )
    if not gap > 1:
        raise ValueError(f"{fn}: gap must be > 1, got {gap}")
    if not isinstance(max_outliers, int) or max_outliers < 1:
        raise ValueError(f"{fn}: max_outliers must be a positive int, got {max_outliers!r}")
    lam = eigenvalues.detach().to(torch.float64).sort(descending=True).values
    lam = lam[lam > 0]
    count = 0
    for m in range(1, min(max_outliers, lam.numel() - 1) + 1):
        if lam[m - 1] / lam[m] >= gap:
            count = m
    return count


# ---------------------------------------------------------------------------------------------
# how well sign patterns of alignments separate classes


@dataclass
class RegionAgreement:
    """agreement: fraction of inputs whose sign-pattern region's majority class is their own
    class; regions: {pattern: (majority class, count)} with pattern a tuple of signs in
    {-1, 0, +1}, one per alignment column; classes_separated: every class present is the
    majority of at least one region (the signs tell every class apart)."""

    agreement: float
    regions: dict
    classes_separated: bool


def sign_region_agreement(alignments: torch.Tensor, labels: torch.Tensor) -> RegionAgreement:
    """Agreement of the regions cut out by the signs of the alignments with class labels.

    alignments: [N, k] (e.g. a_1, a_2 on a grid); labels: [N] int (e.g. the model's predicted
    classes on the grid). Each input gets the pattern (sign a_1, …, sign a_k); each pattern is
    assigned the majority label of its inputs; the agreement is the fraction of inputs whose
    label is their pattern's majority label (1: the sign changes trace the decision boundary
    exactly; the fraction of the largest class: the signs carry no information)."""
    fn = "sign_region_agreement"
    if not isinstance(alignments, torch.Tensor) or alignments.dim() != 2:
        raise ValueError(
            f"{fn}: alignments must be [N, k], got {getattr(alignments, 'shape', type(alignments).__name__)}"
        )
    if (
        not isinstance(labels, torch.Tensor)
        or labels.shape != alignments.shape[:1]
        or labels.is_floating_point()
    ):
        raise ValueError(
            f"{fn}: labels must be integer [N={alignments.shape[0]}], got "
            f"{getattr(labels, 'shape', type(labels).__name__)}"
        )
    signs = torch.sign(alignments.detach()).long().cpu()
    labels = labels.detach().long().cpu()
    patterns, inverse = torch.unique(signs, dim=0, return_inverse=True)
    C = int(labels.max()) + 1
    counts = torch.zeros(len(patterns), C, dtype=torch.long)
    counts.index_put_((inverse, labels), torch.ones_like(labels), accumulate=True)
    majority = counts.argmax(dim=1)
    agreement = float(counts.max(dim=1).values.sum()) / len(labels)
    regions = {tuple(p.tolist()): (int(c), int(n)) for p, c, n in zip(patterns, majority, counts.sum(1))}
    separated = set(labels.unique().tolist()) <= set(majority.tolist())
    return RegionAgreement(agreement, regions, separated)
