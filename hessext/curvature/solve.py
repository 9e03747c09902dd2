"""The damped curvature solve shared by influence, RelatIF, self-influence and RUE.

All of them need X = H_δ⁻¹ V for a few right-hand sides V [P, k] and must say how they got it.
The rule is one and explicit:

* ``method='cholesky' | 'eigh' | 'cg'`` are damped solves with H_δ = H + δI. They need H_δ
  positive definite, i.e. δ > -λ_min (at a trained network λ_min is usually negative: the
  toolbox's Hessian has λ_min = -0.182, hence its δ = 0.2). Otherwise a ValueError quotes λ_min.
  'cholesky' factors the dense Hessian (fast for one use); 'eigh' reuses the Hessian's cached
  eigendecomposition (one eigendecomposition serves every method); 'cg' is conjugate gradients
  (the matrix-free choice for a HessianOperator).
* ``method='pinv'`` is the eigendecomposition-based Moore–Penrose pseudo-inverse of H_δ
  (Hessian.pinv): eigen-directions with |λ + δ| ≤ rcond · max|λ + δ| are dropped, the others
  (negative ones included) are inverted; rcond defaults to Hessian.pinv's (1e-10).
* Structured curvature (K-FAC, EK-FAC, diagonal: hessext/curvature/structured.py) is solved
  exactly in its eigenbasis ('eigh', the default; or 'pinv'). Its damping may also be
  ``'heuristic'``: 0.1 × the mean eigenvalue of each block (Kronfluence's default).

Every result carries a :class:`SolveInfo` saying which of these was used, in its ``.solver``
attribute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hessext._internal.params import flat_parameters, values_fingerprint
from hessext.curvature.assembly import hessian as exact_hessian
from hessext.curvature.exact import Hessian
from hessext.curvature.structured import StructuredCurvature, block_damping

METHODS = ("cholesky", "eigh", "cg", "pinv")


@dataclass(frozen=True)
class SolveInfo:
    """How H_δ⁻¹ was applied.

    method: 'cholesky' | 'eigh' | 'cg' | 'pinv'; damping: δ (or 'heuristic' for structured
    curvature, with the value of each block in block_damping); lambda_min: the smallest
    eigenvalue of H when it was known without extra work (eigh/pinv), else None; rcond and
    cutoff: the pseudo-inverse's relative and absolute threshold on |λ + δ| (pinv only);
    n_dropped: how many eigen-directions the pseudo-inverse dropped (pinv only); curvature:
    what H is (e.g. 'ekfac'), when it is not the exact Hessian."""

    method: str
    damping: float | str
    lambda_min: float | None = None
    rcond: float | None = None
    cutoff: float | None = None
    n_dropped: int | None = None
    block_damping: tuple | None = None
    curvature: str | None = None

    def __str__(self) -> str:
        delta = f"{self.damping:g}" if isinstance(self.damping, (int, float)) else "δ_block"
        what = f" ({self.curvature})" if self.curvature else ""
        text = f"{self.method} solve of H{what} + {delta}·I"
        if self.block_damping is not None:
            text += f" with per-block δ = {', '.join(f'{d:.3g}' for d in self.block_damping)}"
        if self.lambda_min is not None:
            text += f" (λ_min = {self.lambda_min:.6g})"
        if self.method == "pinv":
            text += (
                f", pseudo-inverse dropping {self.n_dropped} eigen-directions with "
                f"|λ + δ| <= {self.cutoff:.3g} (rcond {self.rcond:g})"
            )
        return text


def attach(tensor: torch.Tensor, info) -> torch.Tensor:
    """Return ``tensor`` with ``tensor.solver = info`` (a plain Python attribute: it stays on
    this object and is not carried over by tensor operations)."""
    setattr(tensor, "solver", info)  # noqa: B010  (a plain attribute on this tensor object)
    return tensor


def is_dense(hessian) -> bool:
    """Whether ``hessian`` is a dense matrix with a full eigendecomposition (not an operator)."""
    return hasattr(hessian, "eigh") and hasattr(hessian, "dense")


def resolve_hessian(hessian, model, loss_fn, train, *, params, regularizer, caller: str, progress=None):
    """A curvature object: the user's (Hessian, HessianOperator, or a [P, P] tensor wrapped
    once) or, when None, the exact Hessian of the mean training loss (+ R)."""
    if hessian is None:
        return exact_hessian(model, loss_fn, train, params=params, regularizer=regularizer, progress=progress)
    if isinstance(hessian, torch.Tensor):
        if hessian.dim() != 2 or hessian.shape[0] != hessian.shape[1]:
            raise ValueError(
                f"{caller}: hessian must be a square [P, P] matrix, got shape {tuple(hessian.shape)}"
            )
        if not torch.isfinite(hessian).all():
            raise ValueError(f"{caller}: hessian contains non-finite values")
        return Hessian.from_matrix(hessian)
    if not hasattr(hessian, "solve") and not hasattr(hessian, "top_eigenpairs"):
        raise TypeError(
            f"{caller}: hessian must be a hessext curvature (Hessian, HessianOperator, kfac, ekfac, "
            f"diag_ggn, ...) or a [P, P] tensor, got {type(hessian).__name__}"
        )
    return hessian


def check_matches(hessian, model, params, caller: str) -> None:
    """Refuse a curvature object of other parameters: a different count, or — when it recorded
    them (hessext.hessian, ggn, hessian_operator do) — other parameter values than the model
    has now (trained further, reloaded, another model)."""
    names, tensors = flat_parameters(model, params)
    P = sum(t.numel() for t in tensors)
    if hessian.num_params != P:
        raise ValueError(
            f"{caller}: the Hessian is over {hessian.num_params} parameters but the "
            f"model's chosen parameters number {P}"
        )
    info = getattr(hessian, "info", {}) or {}
    recorded = info.get("params_sha256")
    if recorded is not None and (info.get("params") != names or recorded != values_fingerprint(tensors)):
        raise ValueError(
            f"{caller}: hessian was computed at other parameter values than the model has now "
            "(was the model trained further, reloaded, or is this another model?); compute it "
            "again for the current model"
        )


def check_options(damping, method: str | None, rcond: float | None, caller: str) -> None:
    """The solve's options: a known method, a finite damping >= 0 (or 'heuristic', for
    structured curvature), rcond in [0, 1)."""
    if method is not None and method not in METHODS:
        raise ValueError(f"{caller}: method must be one of {METHODS}, got {method!r}")
    if damping == "heuristic":
        return
    if not (
        isinstance(damping, (int, float))
        and not isinstance(damping, bool)
        and math.isfinite(damping)
        and damping >= 0
    ):
        raise ValueError(
            f"{caller}: damping must be a finite number >= 0 (or 'heuristic' for structured "
            f"curvature), got {damping!r}"
        )
    if rcond is not None and not (0 <= rcond < 1):
        raise ValueError(f"{caller}: rcond must be in [0, 1), got {rcond!r}")


def solve(
    hessian, V: torch.Tensor, *, damping: float | str, method: str | None, rcond: float | None, caller: str
) -> tuple[torch.Tensor, SolveInfo]:
    """X = H_δ⁻¹ V (or the pseudo-inverse), V: [P, k] → X: [P, k] in float64 on V's device."""
    check_options(damping, method, rcond, caller)
    if isinstance(hessian, StructuredCurvature):
        return _solve_structured(hessian, V, damping=damping, method=method, rcond=rcond, caller=caller)
    if damping == "heuristic":
        raise ValueError(
            f"{caller}: damping='heuristic' (0.1 × each block's mean eigenvalue) is defined for "
            "structured curvature (hessext.kfac, ekfac, diag_ggn); give a number for "
            f"{type(hessian).__name__}"
        )
    if method is None:
        method = "cholesky" if is_dense(hessian) else "cg"
    if not is_dense(hessian) and method in ("eigh", "pinv"):
        raise ValueError(
            f"{caller}: method={method!r} needs a dense hessext.Hessian (its full "
            "eigendecomposition); a matrix-free HessianOperator supports method='cg'"
        )
    device = V.device
    if method == "pinv":
        kwargs = {} if rcond is None else {"rcond": float(rcond)}
        X, record = hessian.pinv(V, damping=damping, return_record=True, **kwargs)
        info = SolveInfo(
            "pinv",
            float(damping),
            hessian.lambda_min(),
            record["rcond"],
            record["threshold"],
            record["dropped"],
        )
        return X.to(device=device, dtype=torch.float64), info
    lambda_min = hessian.lambda_min() if method == "eigh" else None
    try:
        X = hessian.solve(V, damping=damping, method=method)
    except ValueError as err:
        raise ValueError(f"{caller}: {err} (here: method='pinv')") from err
    return X.to(device=device, dtype=torch.float64), SolveInfo(method, float(damping), lambda_min)


def _solve_structured(hessian, V, *, damping, method, rcond, caller):
    """The exact solve of a structured curvature in its eigenbasis ('eigh'), or its pinv."""
    if method not in (None, "eigh", "pinv"):
        raise ValueError(
            f"{caller}: method={method!r} does not apply to a {type(hessian).__name__}; it is "
            "solved exactly in its eigenbasis (method='eigh', the default, or 'pinv')"
        )
    kind = hessian.info.get("kind")
    if method == "pinv":
        deltas = tuple(block_damping(damping, hessian.blocks, caller))
        per_block = deltas if damping == "heuristic" else None
        kwargs = {} if rcond is None else {"rcond": float(rcond)}
        X, record = hessian.pinv(V, damping=damping, return_record=True, **kwargs)
        info = SolveInfo(
            "pinv",
            damping,
            hessian.lambda_min(),
            record["rcond"],
            record["threshold"],
            record["dropped"],
            block_damping=per_block,
            curvature=kind,
        )
        return X.to(device=V.device, dtype=torch.float64), info
    try:
        X = hessian.solve(V, damping=damping)
    except ValueError as err:
        raise ValueError(f"{caller}: {err}") from err
    return X.to(device=V.device, dtype=torch.float64), structured_solve_info(hessian, damping, caller)


def structured_solve_info(hessian, damping, caller: str) -> SolveInfo:
    """The record of an exact eigenbasis solve of a structured curvature at ``damping``."""
    deltas = tuple(block_damping(damping, hessian.blocks, caller))
    return SolveInfo(
        "eigh",
        damping,
        hessian.lambda_min(),
        block_damping=deltas if damping == "heuristic" else None,
        curvature=hessian.info.get("kind"),
    )
