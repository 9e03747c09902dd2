"""Block-diagonal curvature in a known eigenbasis: what K-FAC, EK-FAC and the diagonal
approximations share (docs/structured-curvature.md).

A structured curvature C is block diagonal over groups of parameters (a layer's weight and bias,
or any set of parameters for a diagonal), and each block is given in its own orthonormal
eigenbasis, C_b = Q_b diag(λ_b) Q_bᵀ. Everything then costs no more than the basis changes:

    C @ V            Q diag(λ) Qᵀ V
    solve(V, δ)      Q diag(1/(λ + δ)) Qᵀ V           (needs λ + δ > 0 everywhere)
    logdet(δ)        Σ log(λ + δ)
    trace()          Σ λ
    top_eigenpairs   the k largest λ over all blocks, with their basis vectors

all exact for the approximation (no iteration, no sampling). Parameters outside every block are
refused at construction: a structured curvature covers exactly the parameters it was built for.

Damping follows Kronfluence's conventions: a number δ is added to every eigenvalue of every block;
``damping="heuristic"`` adds 0.1 × (the mean eigenvalue of each block) to that block.
"""

from __future__ import annotations

import abc
import math
import warnings

import torch

from hessext.curvature.base import CurvatureOperator, as_matrix
from hessext.curvature.errors import NotPositiveDefiniteError, not_pd_message

__all__ = ["Block", "StructuredCurvature", "HEURISTIC_DAMPING_SCALE", "block_damping"]

# Kronfluence's default damping: 0.1 × the mean eigenvalue of each block
HEURISTIC_DAMPING_SCALE = 0.1


class Block(abc.ABC):
    """One diagonal block of a structured curvature, in its eigenbasis.

    ``index``: LongTensor [p], the positions in θ of the block's own coordinates (its layout:
    for a layer, the [O, I'] matrix of weight columns with the bias as the last column,
    row-major). Subclasses give the eigenvalues [p] and the basis changes."""

    name: str
    index: torch.Tensor

    @property
    def size(self) -> int:
        """p: how many parameters the block covers."""
        return int(self.index.numel())

    @abc.abstractmethod
    def eigenvalues(self) -> torch.Tensor:
        """λ [p], float64, in the block's eigen-index order (not sorted)."""

    @abc.abstractmethod
    def to_eigenbasis(self, X: torch.Tensor) -> torch.Tensor:
        """Qᵀ X for X [p, M] in the block's layout → [p, M] in eigen-index order."""

    @abc.abstractmethod
    def from_eigenbasis(self, Y: torch.Tensor) -> torch.Tensor:
        """Q Y for Y [p, M] in eigen-index order → [p, M] in the block's layout."""

    @abc.abstractmethod
    def eigenvectors(self, which: torch.Tensor) -> torch.Tensor:
        """Columns Q[:, which] [p, k] (float64, block layout) for eigen-indices ``which`` [k]."""

    @property
    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Bytes held by the block's factors."""

    def apply(self, X: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Q diag(scale) Qᵀ X for X [p, M] and scale [p] (eigen-index order)."""
        return self.from_eigenbasis(self.to_eigenbasis(X) * scale.unsqueeze(1))

    def diagonal(self) -> torch.Tensor:
        """diag(Q diag(λ) Qᵀ) [p] in block layout (basis columns a chunk at a time)."""
        lam = self.eigenvalues()
        out = torch.zeros(self.size, dtype=torch.float64, device=self.index.device)
        chunk = max(1, (1 << 24) // max(1, self.size))
        for s in range(0, self.size, chunk):
            which = torch.arange(s, min(self.size, s + chunk), device=self.index.device)
            out += (self.eigenvectors(which).square() * lam[which].unsqueeze(0)).sum(1)
        return out

    def dense(self) -> torch.Tensor:
        """The block as a float64 [p, p] matrix in its layout (small blocks only)."""
        Q = self.eigenvectors(torch.arange(self.size, device=self.index.device))
        return (Q * self.eigenvalues().unsqueeze(0)) @ Q.T


def block_damping(damping, blocks: list[Block], caller: str) -> list[float]:
    """The damping of each block: one number δ >= 0 for all, or 'heuristic' (0.1 × each block's
    mean eigenvalue, Kronfluence's default)."""
    if isinstance(damping, str):
        if damping != "heuristic":
            raise ValueError(f"{caller}: damping must be a number >= 0 or 'heuristic', got {damping!r}")
        return [HEURISTIC_DAMPING_SCALE * float(b.eigenvalues().mean()) for b in blocks]
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(damping):
        raise ValueError(f"{caller}: damping must be a finite number >= 0 or 'heuristic', got {damping!r}")
    if damping < 0:
        raise ValueError(f"{caller}: damping must be >= 0, got {damping!r}")
    return [float(damping)] * len(blocks)


class StructuredCurvature(CurvatureOperator):
    """A block-diagonal curvature over ``blocks`` (each in its eigenbasis) covering all P chosen
    parameters exactly once. ``info`` records how it was made (kind, loss, fisher, n, params,
    params_sha256, ...)."""

    def __init__(self, blocks: list[Block], num_params: int, info: dict, *, device=None):
        self.blocks = list(blocks)
        self.num_params = int(num_params)
        self.info = dict(info)
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        covered = sum(b.size for b in self.blocks)
        if covered != self.num_params:
            raise ValueError(
                f"{type(self).__name__}: the blocks cover {covered} of {self.num_params} parameters"
            )

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    # ------------------------------------------------------------------ products
    def _apply(self, V: torch.Tensor, scales: list[torch.Tensor]) -> torch.Tensor:
        out = torch.empty_like(V)
        for b, s in zip(self.blocks, scales):
            out[b.index] = b.apply(V[b.index], s)
        return out

    def _matmat(self, V):
        return self._apply(V, [b.eigenvalues() for b in self.blocks])

    def _damped(self, damping, caller: str) -> list[torch.Tensor]:
        """λ + δ of every block, refusing a damped curvature that is not positive definite."""
        deltas = block_damping(damping, self.blocks, caller)
        shifted = [b.eigenvalues() + d for b, d in zip(self.blocks, deltas)]
        worst = min(range(len(shifted)), key=lambda j: float(shifted[j].min()))
        if float(shifted[worst].min()) <= 0:
            lam_min = float(self.blocks[worst].eigenvalues().min())
            raise NotPositiveDefiniteError(
                not_pd_message(caller, lam_min, deltas[worst])
                + f" (block {self.blocks[worst].name!r}; damping must be positive where the "
                "approximation is singular)"
            )
        return shifted

    def solve(self, V, damping=0.0, method: str = "eigh", **_ignored) -> torch.Tensor:
        """(C + δI)⁻¹ V for V [P] or [P, M], exactly in each block's eigenbasis.

        damping: a number δ >= 0 added to every eigenvalue, or 'heuristic' (0.1 × each block's
        mean eigenvalue, Kronfluence's default). C + δI must be positive definite
        (NotPositiveDefiniteError otherwise: K-FAC factors are often singular, so δ > 0)."""
        if method not in ("eigh", "cholesky"):
            raise ValueError(
                f"{type(self).__name__}.solve: method must be 'eigh' (the exact solve in the "
                f"eigenbasis), got {method!r}"
            )
        M, vec = as_matrix(V, self.num_params, f"{type(self).__name__}.solve")
        M = M.to(device=self.device, dtype=torch.float64)
        shifted = self._damped(damping, f"{type(self).__name__}.solve")
        X = self._apply(M, [1.0 / s for s in shifted])
        self.info["last_solve"] = {"method": "eigh", "damping": damping}
        return X[:, 0] if vec else X

    def pinv(self, V, rcond: float = 1e-10, *, damping: float = 0.0, return_record: bool = False):
        """Pseudo-inverse in the eigenbasis: eigen-directions with |λ + δ| <= rcond·max|λ + δ|
        are dropped (and the call warns and records it), the others inverted; as Hessian.pinv."""
        if not rcond >= 0:
            raise ValueError(f"{type(self).__name__}.pinv: rcond must be >= 0, got {rcond}")
        M, vec = as_matrix(V, self.num_params, f"{type(self).__name__}.pinv")
        M = M.to(device=self.device, dtype=torch.float64)
        deltas = block_damping(damping, self.blocks, f"{type(self).__name__}.pinv")
        mus = [b.eigenvalues() + d for b, d in zip(self.blocks, deltas)]
        top = max(float(m.abs().max()) for m in mus)
        threshold = float(rcond) * top
        keeps = [m.abs() > threshold for m in mus]
        dropped = sum(int((~k).sum()) for k in keeps)
        record = {
            "rcond": float(rcond),
            "threshold": threshold,
            "dropped": dropped,
            "kept": self.num_params - dropped,
            "negative_kept": sum(int((m[k] < 0).sum()) for m, k in zip(mus, keeps)),
            "damping": damping,
        }
        self.info["last_pinv"] = record
        if dropped:
            warnings.warn(
                f"{type(self).__name__}.pinv: dropped {dropped} of {self.num_params} eigen-directions "
                f"with |eigenvalue| <= {threshold:.3g} (rcond={rcond:g})",
                RuntimeWarning,
                stacklevel=2,
            )
        scales = [torch.where(k, 1.0 / torch.where(k, m, 1.0), 0.0) for m, k in zip(mus, keeps)]
        X = self._apply(M, scales)
        X = X[:, 0] if vec else X
        return (X, record) if return_record else X

    # ------------------------------------------------------------------ spectrum
    def eigvalsh(self) -> torch.Tensor:
        """All P eigenvalues, ascending (exact for the approximation)."""
        return torch.cat([b.eigenvalues() for b in self.blocks]).sort().values

    def _extreme(self, k: int, largest: bool, who: str):
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= self.num_params:
            raise ValueError(
                f"{type(self).__name__}.{who}: k must be an integer in [1, P={self.num_params}], got {k!r}"
            )
        lam = torch.cat([b.eigenvalues() for b in self.blocks])
        owner = torch.cat([torch.full((b.size,), j, dtype=torch.long) for j, b in enumerate(self.blocks)])
        local = torch.cat([torch.arange(b.size) for b in self.blocks])
        values, picked = torch.topk(lam, k, largest=largest, sorted=True)
        vectors = torch.zeros(self.num_params, k, dtype=torch.float64, device=self.device)
        for j, b in enumerate(self.blocks):
            cols = (owner[picked] == j).nonzero().reshape(-1)
            if cols.numel():
                vectors[b.index.unsqueeze(1), cols.unsqueeze(0)] = b.eigenvectors(local[picked[cols]])
        return values, vectors

    def top_eigenpairs(self, k: int, **_ignored) -> tuple[torch.Tensor, torch.Tensor]:
        """The k largest eigenvalues (descending [k]) and eigenvectors [P, k], exactly."""
        return self._extreme(k, True, "top_eigenpairs")

    def smallest_eigenpairs(self, k: int, **_ignored) -> tuple[torch.Tensor, torch.Tensor]:
        """The k smallest eigenvalues (ascending [k]) and eigenvectors [P, k], exactly."""
        return self._extreme(k, False, "smallest_eigenpairs")

    def lambda_min(self, **_ignored) -> float:
        """The smallest eigenvalue of the approximation."""
        return min(float(b.eigenvalues().min()) for b in self.blocks)

    def lambda_max(self, **_ignored) -> float:
        """The largest eigenvalue of the approximation."""
        return max(float(b.eigenvalues().max()) for b in self.blocks)

    def trace(self, **_ignored) -> float:
        """tr(C) = Σ λ, exactly."""
        return float(sum(float(b.eigenvalues().sum()) for b in self.blocks))

    def logdet(self, damping=0.0) -> float:
        """log det(C + δI) = Σ log(λ + δ), exactly; C + δI must be positive definite
        (NotPositiveDefiniteError otherwise). damping as in ``solve``."""
        shifted = self._damped(damping, f"{type(self).__name__}.logdet")
        return float(sum(float(s.log().sum()) for s in shifted))

    def diagonal(self) -> torch.Tensor:
        """diag(C) [P], float64 (Σ_k Q_ik² λ_k per block)."""
        out = torch.empty(self.num_params, dtype=torch.float64, device=self.device)
        for b in self.blocks:
            out[b.index] = b.diagonal()
        return out

    # ------------------------------------------------------------------ access and size
    @property
    def memory_bytes(self) -> int:
        """Bytes held by the factors of all blocks (what storing this curvature costs)."""
        return sum(b.memory_bytes for b in self.blocks)

    def block(self, name: str) -> Block:
        """The block named ``name`` (a layer's module name, e.g. '0' or 'fc1')."""
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"{type(self).__name__}: no block {name!r}; blocks: {[b.name for b in self.blocks]}")

    def dense(self, *, max_bytes: int | None = 2 * 1024**3) -> torch.Tensor:
        """The block-diagonal float64 [P, P] matrix (for comparisons on small models). Refuses
        (MemoryError) above ``max_bytes`` (None: no limit)."""
        P = self.num_params
        if max_bytes is not None and 8 * P * P > max_bytes:
            raise MemoryError(
                f"{type(self).__name__}.dense: a dense float64 [{P}, {P}] matrix needs "
                f"{8 * P * P / 2**30:.2f} GiB > max_bytes={max_bytes / 2**30:.2f} GiB"
            )
        out = torch.zeros(P, P, dtype=torch.float64, device=self.device)
        for b in self.blocks:
            out[b.index.unsqueeze(1), b.index.unsqueeze(0)] = b.dense()
        return out

    def describe(self) -> str:
        """What this curvature approximates, how it was built and what it costs, in words."""
        info = self.info
        lines = [
            f"{type(self).__name__} over P = {self.num_params:,} parameters in {len(self.blocks)} blocks: "
            f"{info.get('description', '')}",
            f"  loss: {info.get('loss')}, n = {info.get('n')}, fisher: {info.get('fisher', '-')}",
            f"  memory: {self.memory_bytes / 2**20:.2f} MiB (a dense matrix would be "
            f"{8 * self.num_params**2 / 2**20:,.0f} MiB)",
            "  damping: a number δ is added to every eigenvalue; 'heuristic' adds 0.1 × each "
            "block's mean eigenvalue (Kronfluence's default)",
        ]
        for b in self.blocks:
            lines.append(f"  block {b.name!r}: {b.describe() if hasattr(b, 'describe') else b.size}")
        return "\n".join(lines)
