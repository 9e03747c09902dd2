"""The exact curvature as linear operators (curvlinops' style: ``C @ V``, ``.to_scipy()``).

``Hessian`` holds a dense, symmetric float64 [P, P] matrix (assembled by ``hessext.hessian`` /
``hessext.ggn`` or loaded with ``Hessian.from_matrix``) and answers exactly: one
eigendecomposition, computed on first use and reused by every spectral method (eigenpairs,
pseudo-inverse, the ``'eigh'`` solver). ``HessianOperator`` is its matrix-free twin for large P:
the same methods, answered with Hessian-vector products, Lanczos, Hutchinson and block
conjugate gradients. Both record how they were made in ``.info`` (alias ``.meta``): kind,
loss, regulariser, dtype of the model's products, n, params.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch

from hessext._internal.memory import available_bytes, trim_heap
from hessext.curvature.base import CurvatureOperator, as_matrix
from hessext.curvature.cg import block_cg
from hessext.curvature.density import spectral_density
from hessext.curvature.errors import HessianTooLargeError, NotPositiveDefiniteError, not_pd_message
from hessext.curvature.lanczos import lanczos

__all__ = ["Hessian", "HessianOperator"]


class Hessian(CurvatureOperator):
    """A dense symmetric curvature matrix H (float64 [P, P]) with exact linear algebra.

    Built by ``hessext.hessian`` / ``hessext.ggn``, or from an existing matrix with
    ``Hessian.from_matrix``. The matrix is symmetric by construction (the assembly mirrors its
    upper tiles). ``H.dense()`` returns the stored tensor itself: do not modify it in place.
    """

    def __init__(self, matrix: torch.Tensor, info: dict | None = None):
        if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"Hessian: matrix must be a square [P, P] tensor, got "
                f"{getattr(matrix, 'shape', type(matrix))}"
            )
        if matrix.dtype != torch.float64:
            raise ValueError(f"Hessian: matrix must be float64, got {matrix.dtype} (use Hessian.from_matrix)")
        self._matrix = matrix
        self.num_params = matrix.shape[0]
        self.info = dict(info or {})
        self._eigh: tuple[torch.Tensor, torch.Tensor] | None = None
        self._cholesky: tuple[float, torch.Tensor] | None = None  # (damping, L) of the last solve

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_matrix(
        cls, matrix, *, n: int | None = None, description: str | None = None, symmetrize: bool = True, **info
    ) -> Hessian:
        """Wrap an existing [P, P] matrix (tensor, numpy array or path to a .npy file).

        It is converted to float64. With ``symmetrize=True`` (default) the stored matrix is
        (A + Aᵀ)/2 and the largest asymmetry |A - Aᵀ|_max of the input is recorded in
        ``info['asymmetry']`` (a float32 matrix saved by another tool is symmetric only to
        rounding)."""
        source = None
        if isinstance(matrix, (str, bytes)) or hasattr(matrix, "__fspath__"):
            source = str(matrix)
            matrix = np.load(matrix)
        if isinstance(matrix, np.ndarray):
            matrix = torch.from_numpy(np.array(matrix, dtype=np.float64))
        if not isinstance(matrix, torch.Tensor):
            raise TypeError(
                f"Hessian.from_matrix: expected a tensor, numpy array or .npy path, "
                f"got {type(matrix).__name__}"
            )
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"Hessian.from_matrix: matrix must be [P, P], got {tuple(matrix.shape)}")
        original_dtype = str(matrix.dtype).replace("torch.", "")
        A = matrix.detach().to(torch.float64)
        if not torch.isfinite(A).all():
            raise ValueError("Hessian.from_matrix: matrix has non-finite entries")
        asym = float((A - A.T).abs().max()) if A.numel() else 0.0
        if symmetrize:
            A = (A + A.T) / 2
        elif A.data_ptr() == matrix.data_ptr():
            A = A.clone()
        record = {
            "kind": "matrix",
            "description": description,
            "n": n,
            "dtype": original_dtype,
            "asymmetry": asym,
            "symmetrized": symmetrize,
        }
        if source:
            record["source"] = source
        record.update(info)
        return cls(A.contiguous(), record)

    # ---------------------------------------------------------------- basic access
    @property
    def device(self) -> torch.device:
        return self._matrix.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    def dense(self) -> torch.Tensor:
        """The float64 [P, P] matrix (the stored tensor, not a copy)."""
        return self._matrix

    def numpy(self) -> np.ndarray:
        """The matrix as a float64 numpy array (a view when on CPU)."""
        return self._matrix.cpu().numpy()

    def _matmat(self, V):
        return self._matrix @ V

    def diagonal(self) -> torch.Tensor:
        """diag(H), float64 [P]."""
        return self._matrix.diagonal().clone()

    def trace(self) -> float:
        """tr(H), exactly."""
        return float(self._matrix.diagonal().sum())

    def logdet(self, damping: float = 0.0) -> float:
        """log det(H + δI), exactly (Cholesky; cached for the last δ). H + δI must be positive
        definite: NotPositiveDefiniteError otherwise, with λ_min and the damping needed."""
        L = self._cholesky_factor(float(damping), who="Hessian.logdet")
        return float(2 * L.diagonal().log().sum())

    @property
    def memory_bytes(self) -> int:
        """Bytes held: the [P, P] matrix and, once computed, its eigendecomposition and factor."""
        held = self._matrix.numel() * 8
        if self._eigh is not None:
            held += sum(t.numel() * 8 for t in self._eigh)
        if self._cholesky is not None:
            held += self._cholesky[1].numel() * 8
        return held

    def describe(self) -> str:
        """What this matrix is, in words."""
        kind = self.info.get("kind", "matrix")
        what = {"hessian": "the exact Hessian", "ggn": "the exact generalised Gauss-Newton matrix"}.get(
            kind, f"a dense {kind}"
        )
        return (
            f"Hessian(P = {self.num_params:,}): {what} of the mean training loss"
            f"{' + R' if self.info.get('regularizer') else ''}, dense float64 "
            f"({self.memory_bytes / 2**20:,.1f} MiB), loss {self.info.get('loss')}, "
            f"n = {self.info.get('n')}; "
            "damping δ is added to the diagonal"
        )

    # ---------------------------------------------------------------- spectrum
    def eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(eigenvalues ascending [P], orthonormal eigenvectors [P, P] as columns), float64.

        Computed once and cached; every spectral method reuses it. On CPU by LAPACK's dsyevr
        (scipy): beside the matrix it needs a working copy and the eigenvectors, 16·P² bytes,
        where torch.linalg.eigh's dsyevd needs about 28·P². Before it starts, a cached Cholesky
        factor (8·P²) is dropped and the memory is checked: HessianTooLargeError (a MemoryError)
        with the bytes needed instead of running out halfway."""
        if self._eigh is None:
            self._cholesky = None  # 8·P² bytes that the decomposition needs more
            trim_heap()
            P = self.num_params
            need = 16 * P * P + 64 * P
            avail = available_bytes(self.device)
            if need > avail:
                raise HessianTooLargeError(
                    f"Hessian.eigh: the eigendecomposition of this P = {P} matrix needs {need:,} "
                    f"bytes ({need / 2**30:.2f} GiB) beside it, but only {avail:,} are available; "
                    f"for a few extreme eigenpairs use hessext.hessian_operator(...)"
                    f".top_eigenpairs(k) (Lanczos), which needs O(P·k)"
                )
            if self.device.type == "cpu" and P > 0:
                # H is symmetric: its C-ordered storage is the Fortran-ordered H as well
                w, Z = scipy.linalg.eigh(
                    self._matrix.numpy().T, driver="evr", check_finite=False, overwrite_a=False
                )
                values, vectors = torch.from_numpy(w), torch.from_numpy(Z)
            else:
                values, vectors = torch.linalg.eigh(self._matrix)
            self._eigh = (values, vectors)
        return self._eigh

    def eigvalsh(self) -> torch.Tensor:
        """Eigenvalues ascending [P] (from the cached eigendecomposition)."""
        return self.eigh()[0]

    def _check_k(self, k: int, who: str) -> int:
        if not isinstance(k, (int, np.integer)) or k < 1 or k > self.num_params:
            raise ValueError(f"Hessian.{who}: k must be an integer in [1, P={self.num_params}], got {k!r}")
        return int(k)

    def top_eigenpairs(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k largest eigenvalues (descending [k]) and their eigenvectors [P, k]."""
        k = self._check_k(k, "top_eigenpairs")
        values, vectors = self.eigh()
        return values[-k:].flip(0), vectors[:, -k:].flip(1)

    def smallest_eigenpairs(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k smallest (most negative) eigenvalues (ascending [k]) and eigenvectors [P, k]."""
        k = self._check_k(k, "smallest_eigenpairs")
        values, vectors = self.eigh()
        return values[:k], vectors[:, :k]

    def lambda_min(self) -> float:
        return float(self.eigh()[0][0])

    def lambda_max(self) -> float:
        return float(self.eigh()[0][-1])

    # ---------------------------------------------------------------- solves
    def solve(
        self,
        V,
        damping: float = 0.0,
        method: str = "cholesky",
        *,
        tol: float = 1e-10,
        max_iter: int | None = None,
    ) -> torch.Tensor:
        """(H + δI)⁻¹ V for V [P] or [P, M] (float64 result, same shape).

        method: 'cholesky' (factor cached for the last δ), 'eigh' (reuses the cached
        eigendecomposition) or 'cg' (block conjugate gradients to relative residual ``tol``).
        All three require H + δI positive definite; if it is not, NotPositiveDefiniteError
        (a ValueError) states λ_min and the damping needed. An indefinite matrix is never
        inverted silently: use ``pinv`` for a pseudo-inverse."""
        damping = float(damping)
        M, vec = as_matrix(V, self.num_params, "Hessian.solve")
        M = M.to(device=self.device, dtype=torch.float64)
        if method == "cholesky":
            L = self._cholesky_factor(damping)
            X = torch.cholesky_solve(M, L)
        elif method == "eigh":
            values, vectors = self.eigh()
            lam_min = float(values[0])
            if lam_min + damping <= 0:
                raise NotPositiveDefiniteError(not_pd_message("Hessian.solve", lam_min, damping))
            X = vectors @ ((vectors.T @ M) / (values + damping).unsqueeze(1))
        elif method == "cg":
            # Cholesky is the cheapest exact positive-definiteness test of a dense matrix.
            self._cholesky_factor(damping)
            X, _ = block_cg(
                lambda Y: self._matrix @ Y + damping * Y, M, tol=tol, max_iter=max_iter, who="Hessian.solve"
            )
        else:
            raise ValueError(f"Hessian.solve: method must be 'cholesky', 'eigh' or 'cg', got {method!r}")
        self.info["last_solve"] = {"method": method, "damping": damping}
        return X[:, 0] if vec else X

    def _cholesky_factor(self, damping: float, who: str = "Hessian.solve") -> torch.Tensor:
        if self._cholesky is not None and self._cholesky[0] == damping:
            return self._cholesky[1]
        A = self._matrix.clone()
        A.diagonal().add_(damping)
        L, status = torch.linalg.cholesky_ex(A)
        del A
        if int(status) != 0:
            if self._eigh is not None:
                lam_min = self.lambda_min()
            else:
                lam_min = float(torch.linalg.eigvalsh(self._matrix)[0])
            raise NotPositiveDefiniteError(not_pd_message(who, lam_min, damping))
        self._cholesky = (damping, L)
        return L

    def pinv(self, V, rcond: float = 1e-10, *, damping: float = 0.0, return_record: bool = False):
        """Eigendecomposition pseudo-inverse applied to V ([P] or [P, M]): Σ_{|μ_i| > t} u_i u_iᵀ V / μ_i
        with μ = λ + damping and t = rcond·max|μ|. Directions with |μ| ≤ t are dropped, and the
        call says so: it warns when any eigenvalue was dropped, records what it did in
        ``info['last_pinv']`` and, with ``return_record=True``, returns (X, record) with the
        record's keys 'rcond', 'threshold', 'dropped', 'kept', 'negative_kept', 'damping'.
        Negative eigenvalues above the threshold are inverted (the result is the Moore-Penrose
        pseudo-inverse of the indefinite matrix)."""
        if not rcond >= 0:
            raise ValueError(f"Hessian.pinv: rcond must be >= 0, got {rcond}")
        M, vec = as_matrix(V, self.num_params, "Hessian.pinv")
        M = M.to(device=self.device, dtype=torch.float64)
        values, vectors = self.eigh()
        mu = values + float(damping)
        threshold = float(rcond) * float(mu.abs().max()) if mu.numel() else 0.0
        keep = mu.abs() > threshold
        dropped = int((~keep).sum())
        record = {
            "rcond": float(rcond),
            "threshold": threshold,
            "dropped": dropped,
            "kept": int(keep.sum()),
            "negative_kept": int((mu[keep] < 0).sum()),
            "damping": float(damping),
        }
        self.info["last_pinv"] = record
        if dropped:
            warnings.warn(
                f"Hessian.pinv: dropped {dropped} of {self.num_params} eigen-directions with "
                f"|eigenvalue| <= {threshold:.3g} (rcond={rcond:g})",
                RuntimeWarning,
                stacklevel=2,
            )
        U = vectors[:, keep]
        X = U @ ((U.T @ M) / mu[keep].unsqueeze(1))
        X = X[:, 0] if vec else X
        return (X, record) if return_record else X

    # ---------------------------------------------------------------- conversions
    def operator(self) -> HessianOperator:
        """A matrix-free view of this matrix (for testing the iterative methods)."""
        return HessianOperator(
            lambda V: self._matrix @ V,
            self.num_params,
            device=self.device,
            info={**self.info, "kind": f"{self.info.get('kind', 'matrix')} (operator view)"},
        )

    def save(self, path) -> None:
        """Write the matrix as a float64 .npy file (row-major [P, P])."""
        np.save(path, self.numpy())


class HessianOperator(CurvatureOperator):
    """A matrix-free symmetric operator given by its product V [P, M] ↦ H V [P, M].

    ``HessianOperator(matmat, P)`` wraps any function; ``hessext.hessian_operator(model, ...)``
    builds one from Hessian-vector products of a model's mean training loss. Methods:
    ``@``, ``top_eigenpairs`` / ``smallest_eigenpairs`` (Lanczos with full reorthogonalisation
    and a residual stopping rule), ``trace`` (Hutchinson), ``solve`` (block CG on all
    right-hand sides at once), ``dense()`` (P products, on request and after a size check)."""

    def __init__(
        self,
        matmat: Callable[[torch.Tensor], torch.Tensor],
        num_params: int,
        *,
        device=None,
        info: dict | None = None,
    ):
        self._fn = matmat
        self.num_params = int(num_params)
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self.info = dict(info or {"kind": "operator"})

    @property
    def device(self):
        return self._device

    @property
    def dtype(self):
        return torch.float64

    def _matmat(self, V):
        return self._fn(V).to(torch.float64)

    def dense(self, *, max_bytes: int | None = 2 * 1024**3, block: int = 256) -> torch.Tensor:
        """The float64 [P, P] matrix from P products (in column blocks), symmetrised. Refuses
        (MemoryError) when it would need more than ``max_bytes`` (default 2 GiB; None: no limit)."""
        P = self.num_params
        need = 8 * P * P
        if max_bytes is not None and need > max_bytes:
            raise MemoryError(
                f"HessianOperator.dense: a dense float64 [{P}, {P}] matrix needs "
                f"{need / 2**30:.2f} GiB > max_bytes={max_bytes / 2**30:.2f} GiB; "
                f"pass max_bytes=None to force it"
            )
        H = torch.empty(P, P, dtype=torch.float64, device=self.device)
        for start in range(0, P, block):
            stop = min(P, start + block)
            E = torch.zeros(P, stop - start, dtype=torch.float64, device=self.device)
            E[start:stop].diagonal().fill_(1.0)
            H[:, start:stop] = self._matmat(E)
        return (H + H.T) / 2

    def to_hessian(self, **kw) -> Hessian:
        """Materialise as a dense ``Hessian`` (exact eigendecomposition, Cholesky, ...)."""
        return Hessian(self.dense(**kw), {**self.info, "from_operator": True})

    def top_eigenpairs(
        self, k: int, *, tol: float = 1e-10, max_iter: int | None = None, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k largest eigenvalues (descending) and eigenvectors [P, k], by Lanczos; stops when
        every wanted Ritz pair has ‖H u − θ u‖ ≤ tol·max|θ|."""
        return lanczos(
            self._matmat,
            self.num_params,
            k,
            which="largest",
            tol=tol,
            max_iter=max_iter,
            seed=seed,
            device=self.device,
        )

    def smallest_eigenpairs(
        self, k: int, *, tol: float = 1e-10, max_iter: int | None = None, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k smallest eigenvalues (ascending) and eigenvectors [P, k], by Lanczos."""
        return lanczos(
            self._matmat,
            self.num_params,
            k,
            which="smallest",
            tol=tol,
            max_iter=max_iter,
            seed=seed,
            device=self.device,
        )

    def lambda_min(self, **kw) -> float:
        return float(self.smallest_eigenpairs(1, **kw)[0][0])

    def lambda_max(self, **kw) -> float:
        return float(self.top_eigenpairs(1, **kw)[0][0])

    def trace(self, num_samples: int = 100, *, seed: int = 0, block: int = 32, return_std: bool = False):
        """Hutchinson's estimate of tr(H) with Rademacher probes: mean of zᵀHz over
        ``num_samples`` probes (unbiased; standard error ≈ sqrt(2 Σ_{i≠j} H_ij²/num_samples)).
        With return_std=True returns (estimate, standard error of the mean)."""
        if num_samples < 1:
            raise ValueError(f"HessianOperator.trace: num_samples must be >= 1, got {num_samples}")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        samples = []
        for start in range(0, num_samples, block):
            m = min(block, num_samples - start)
            Z = torch.randint(0, 2, (self.num_params, m), generator=gen, dtype=torch.int64) * 2 - 1
            Z = Z.to(device=self.device, dtype=torch.float64)
            samples.append((Z * self._matmat(Z)).sum(0))
        s = torch.cat(samples)
        est = float(s.mean())
        if return_std:
            std = float(s.std() / math.sqrt(num_samples)) if num_samples > 1 else float("inf")
            return est, std
        return est

    def logdet(
        self, damping: float = 0.0, *, num_probes: int = 20, num_steps: int = 60, seed: int = 0
    ) -> float:
        """Stochastic Lanczos quadrature estimate of log det(H + δI) (hessext.curvature.density);
        refuses a δ at which a Ritz value of H + δI is <= 0."""
        density = spectral_density(
            self, num_probes=num_probes, num_steps=num_steps, seed=seed, progress=False
        )
        return density.logdet(float(damping))

    @property
    def memory_bytes(self) -> int:
        """Bytes this operator holds for its products (the data and parameter snapshot when
        built by hessext.hessian_operator; 0 when unknown)."""
        return int(self.info.get("held_bytes", 0))

    def describe(self) -> str:
        """What this operator is, in words."""
        return (
            f"HessianOperator(P = {self.num_params:,}): {self.info.get('kind', 'operator')} by "
            f"matrix-free products (loss {self.info.get('loss')}, n = {self.info.get('n')}); trace by "
            "Hutchinson, eigenpairs by Lanczos, solves by block CG, logdet by SLQ; damping δ is "
            "added to the diagonal"
        )

    def solve(
        self, V, damping: float = 0.0, method: str = "cg", *, tol: float = 1e-10, max_iter: int | None = None
    ) -> torch.Tensor:
        """(H + δI)⁻¹ V by block conjugate gradients over all columns of V at once.

        CG needs H + δI positive definite: a direction of non-positive curvature met during the
        iteration raises NotPositiveDefiniteError with the Rayleigh quotient found there (an
        upper bound on λ_min) and the damping needed; failing to reach ``tol`` in ``max_iter``
        iterations raises RuntimeError."""
        if method != "cg":
            raise ValueError(f"HessianOperator.solve: only method='cg' is matrix-free, got {method!r}")
        damping = float(damping)
        M, vec = as_matrix(V, self.num_params, "HessianOperator.solve")
        M = M.to(device=self.device, dtype=torch.float64)
        X, _ = block_cg(
            lambda Y: self._matmat(Y) + damping * Y,
            M,
            tol=tol,
            max_iter=max_iter,
            who="HessianOperator.solve",
            damping=damping,
        )
        self.info["last_solve"] = {"method": "cg", "damping": damping}
        return X[:, 0] if vec else X
