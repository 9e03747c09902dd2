"""What every curvature object shares: the linear-operator surface (``@``, ``shape``,
``to_scipy()``, ``info``) over one abstract product V [P, M] ↦ C V."""

from __future__ import annotations

import abc

import numpy as np
import torch

__all__ = ["CurvatureOperator", "as_matrix"]


def as_matrix(V: torch.Tensor, P: int, who: str) -> tuple[torch.Tensor, bool]:
    """V [P] or [P, M] → ([P, M], was_vector)."""
    if not isinstance(V, torch.Tensor):
        V = torch.as_tensor(np.asarray(V))
    if V.dim() == 1:
        if V.shape[0] != P:
            raise ValueError(f"{who}: V must be [P={P}] or [P={P}, M], got {tuple(V.shape)}")
        return V.unsqueeze(1), True
    if V.dim() == 2 and V.shape[0] == P:
        return V, False
    raise ValueError(f"{who}: V must be [P={P}] or [P={P}, M], got {tuple(V.shape)}")


class CurvatureOperator(abc.ABC):
    """What dense and matrix-free curvature operators share: the linear-operator surface."""

    num_params: int
    info: dict

    @property
    def meta(self) -> dict:
        """Alias of ``info``: how this operator was made."""
        return self.info

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_params, self.num_params)

    @abc.abstractmethod
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H V for V [P, M] float64 → [P, M] float64: the one thing each operator defines."""

    def __matmul__(self, V):
        """H @ V for V [P] or [P, M]; returns float64 of the same shape."""
        M, vec = as_matrix(V, self.num_params, f"{type(self).__name__} @ V")
        out = self._matmat(M.to(device=self.device, dtype=torch.float64))
        return out[:, 0] if vec else out

    matmul = __matmul__

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64) applying this operator."""
        from scipy.sparse.linalg import LinearOperator  # lazy: 0.2 s of import time otherwise

        def matmat(X):
            X = np.asarray(X, dtype=np.float64)
            two_d = X.ndim == 2
            Xt = torch.from_numpy(np.ascontiguousarray(X if two_d else X[:, None]))
            Y = self._matmat(Xt.to(self.device)).cpu().numpy()
            return Y if two_d else Y[:, 0]

        return LinearOperator(
            self.shape, matvec=matmat, matmat=matmat, rmatvec=matmat, rmatmat=matmat, dtype=np.float64
        )

    def __repr__(self):
        bits = ", ".join(
            f"{k}={v!r}"
            for k, v in self.info.items()
            if k in ("kind", "loss", "regularizer", "dtype", "n", "description")
        )
        return f"{type(self).__name__}(P={self.num_params}, {bits})"
