"""Diagonal curvature (docs/structured-curvature.md): the exact diagonal of the GGN, and
Hutchinson's estimate of the diagonal of the Hessian.

``diag_ggn``: diag((1/n) Σ_n J_nᵀ Λ_n J_n) exactly. With Λ_n = B_n B_nᵀ (from the loss's
output Hessian) it is (1/n) Σ_n Σ_c (J_nᵀ b_{n,c})², the column sums of squares of C per-example
"gradients" (the back-propagated columns of B_n): ghost products (d²)ᵀ(a²) for Linear layers,
per-sample gradient rows for the rest (any layer: torch.func serves those without a kernel).

``hutchinson_diagonal``: diag(H) ≈ (1/s) Σ_k z_k ⊙ H z_k with Rademacher probes (Bekas et al.
2007), unbiased; each entry's standard error is recorded in ``info['std_error']``.

Both are StructuredCurvature objects whose single block has the identity as eigenbasis, so
solves, log-determinants and eigenpairs are exact for the approximation.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from hessext._internal.guard import preserved
from hessext._internal.progress import progress_bar
from hessext.curvature import distributed as dp
from hessext.curvature.assembly import hessian_operator
from hessext.curvature.problem import output_loss_derivatives
from hessext.curvature.structured import Block, StructuredCurvature
from hessext.per_sample.matrix import PerSampleGrads

__all__ = ["diag_ggn", "hutchinson_diagonal", "DiagonalCurvature", "DiagonalBlock"]


class DiagonalBlock(Block):
    """diag(values) over the parameters at ``index`` (identity eigenbasis)."""

    def __init__(self, name: str, index: torch.Tensor, values: torch.Tensor):
        self.name, self.index, self.values = name, index, values

    def eigenvalues(self):
        return self.values

    def to_eigenbasis(self, X):
        return X

    def from_eigenbasis(self, Y):
        return Y

    def eigenvectors(self, which):
        Q = torch.zeros(self.size, which.numel(), dtype=torch.float64, device=self.index.device)
        Q[which, torch.arange(which.numel(), device=which.device)] = 1.0
        return Q

    def diagonal(self):
        return self.values.clone()

    @property
    def memory_bytes(self):
        return 8 * self.values.numel() + 8 * self.index.numel()

    def describe(self) -> str:
        """Size and value range."""
        v = self.values
        return f"diagonal of {self.size} entries, {float(v.min()):.3g} .. {float(v.max()):.3g}"


class DiagonalCurvature(StructuredCurvature):
    """A diagonal curvature diag(d) [P] (``hessext.diag_ggn``, ``hessext.hutchinson_diagonal``,
    or ``DiagonalCurvature.from_values``)."""

    @classmethod
    def from_values(cls, values: torch.Tensor, info: dict | None = None) -> DiagonalCurvature:
        """Wrap a [P] vector of diagonal entries (float64 copy)."""
        if (
            not isinstance(values, torch.Tensor)
            or values.dim() != 1
            or not bool(torch.isfinite(values).all())
        ):
            raise ValueError("DiagonalCurvature.from_values: values must be a finite [P] tensor")
        v = values.detach().to(torch.float64).clone()
        P = v.numel()
        index = torch.arange(P, device=v.device)
        return cls(
            [DiagonalBlock("diagonal", index, v)], P, {"kind": "diagonal", **(info or {})}, device=v.device
        )

    def _matmat(self, V):
        return V * self.blocks[0].values.unsqueeze(1)


def _loss_factor_columns(prob, x, y, who: str) -> list[torch.Tensor]:
    """The columns b_c [N, C] of Λ_n = B_n B_nᵀ (the loss's output Hessian), in the model dtype."""
    with torch.no_grad():
        out = prob.forward(prob.theta, x)
    _, Lam = output_loss_derivatives(prob, out, y)
    w, U = torch.linalg.eigh(Lam)
    scale = max(float(w.abs().max()) if w.numel() else 0.0, 1e-300)
    if float(w.min()) < -1e-10 * scale:
        raise ValueError(
            f"{who}: the GGN needs a loss convex in the outputs; ∂²ℓ/∂f² has an eigenvalue "
            f"{float(w.min()):.3g} < 0"
        )
    B = U * w.clamp_min(0).sqrt().unsqueeze(1)
    keep = (w > 1e-14 * scale).any(0)
    return [B[:, :, k].reshape(out.shape).to(prob.dtype) for k in range(B.shape[2]) if bool(keep[k])]


def _seeded_loss(out, t):
    """Σ_c f_c t_c per example: its gradient through the outputs is t (a back-propagated column)."""
    return (out.reshape(out.shape[0], -1) * t.reshape(t.shape[0], -1)).sum(1)


def diag_ggn(
    model: nn.Module,
    loss_fn,
    data,
    *,
    params=None,
    regularizer=None,
    dtype: torch.dtype | None = None,
    batch_size: int | None = 512,
    distributed: bool | None = None,
    progress: bool | None = None,
) -> DiagonalCurvature:
    """The exact diagonal of the GGN of the mean training loss (+ diag ∇²R), as a
    DiagonalCurvature [P]. Arguments as hessext.kfac (any layer type; the loss must be convex in
    the outputs)."""
    caller = "diag_ggn"
    t0 = time.perf_counter()
    with preserved(model):
        prob, local, rank, world = dp.local_problem(
            model,
            loss_fn,
            data,
            params=params,
            regularizer=regularizer,
            dtype=dtype,
            batch_size=batch_size,
            distributed=distributed,
            who=caller,
        )
        dtype = prob.dtype
        total = torch.zeros(prob.num_params, dtype=torch.float64, device=prob.device)
        n_local = 0
        for x, y in progress_bar(
            local, total=len(local), desc=caller, progress=progress if rank == 0 else False
        ):
            n_local += x.shape[0]
            for t in _loss_factor_columns(prob, x, y, caller):
                G = PerSampleGrads(model, _seeded_loss, x, t, params=params, dtype=dtype, progress=False)
                total += G.column_sq_sums()
        counts = torch.tensor([float(n_local)], dtype=torch.float64)
        dp.all_reduce(counts, world)
        dp.all_reduce(total, world)
        n = int(counts.item())
        values = total / n
        if regularizer is not None:
            diag = getattr(regularizer, "hessian_diagonal", None)
            theta64 = prob.theta.to(torch.float64)
            values += (
                diag(theta64).to(torch.float64)
                if diag is not None
                else torch.func.hessian(regularizer.value)(theta64).diagonal()
            )
    info = {
        **prob.info,
        "kind": "diag_ggn",
        "description": "the exact diagonal of the generalised Gauss-Newton matrix",
        "n": n,
        "world_size": world,
        "seconds": time.perf_counter() - t0,
    }
    index = torch.arange(prob.num_params, device=values.device)
    return DiagonalCurvature(
        [DiagonalBlock("diagonal", index, values)], prob.num_params, info, device=values.device
    )


def hutchinson_diagonal(
    model: nn.Module,
    loss_fn,
    data,
    *,
    num_samples: int = 100,
    seed: int = 0,
    block: int = 16,
    params=None,
    regularizer=None,
    dtype: torch.dtype = torch.float64,
    progress: bool | None = None,
) -> DiagonalCurvature:
    """Hutchinson's unbiased estimate of diag(H) of the mean training loss (+ R):
    (1/s) Σ_k z_k ⊙ H z_k with s = ``num_samples`` seeded Rademacher probes, ``block`` probes per
    pass of Hessian-vector products. ``info['std_error']`` [P] is each entry's standard error
    (the entries of H's diagonal may be negative: damped solves then need δ > -min)."""
    caller = "hutchinson_diagonal"
    if not (isinstance(num_samples, int) and num_samples >= 2):
        raise ValueError(f"{caller}: num_samples must be an integer >= 2, got {num_samples!r}")
    if not (isinstance(block, int) and block >= 1):
        raise ValueError(f"{caller}: block must be a positive integer, got {block!r}")
    t0 = time.perf_counter()
    H = hessian_operator(model, loss_fn, data, params=params, regularizer=regularizer, dtype=dtype)
    P = H.num_params
    gen = torch.Generator().manual_seed(int(seed))
    s1 = torch.zeros(P, dtype=torch.float64)
    s2 = torch.zeros(P, dtype=torch.float64)
    starts = range(0, num_samples, block)
    for start in progress_bar(starts, total=len(starts), desc=caller, progress=progress):
        m = min(block, num_samples - start)
        Z = (torch.randint(0, 2, (P, m), generator=gen, dtype=torch.int64) * 2 - 1).to(torch.float64)
        est = (Z.to(H.device) * (H @ Z.to(H.device))).cpu()
        s1 += est.sum(1)
        s2 += est.square().sum(1)
    mean = s1 / num_samples
    var = (s2 / num_samples - mean.square()).clamp_min(0) * num_samples / (num_samples - 1)
    info = {
        **H.info,
        "kind": "hutchinson_diagonal",
        "description": f"Hutchinson's estimate of diag(H) from {num_samples} Rademacher probes",
        "num_samples": num_samples,
        "seed": seed,
        "std_error": (var / num_samples).sqrt(),
        "seconds": time.perf_counter() - t0,
    }
    index = torch.arange(P)
    return DiagonalCurvature([DiagonalBlock("diagonal", index, mean)], P, info)
