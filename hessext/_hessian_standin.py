"""TEMPORARY stand-in for hessext.Hessian until the curvature engine lands on this branch.

Same interface subset the toolbox uses; delete when `git merge hessian` brings the real one.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from hessext._model_guard import flat_parameters


class StandInHessian:
    def __init__(self, matrix: torch.Tensor):
        self.matrix = matrix.to(torch.float64)
        self.num_params = matrix.shape[0]
        self._eig = None
        self.info = {}

    @classmethod
    def from_matrix(cls, matrix, *, n=None, description=None):
        return cls(0.5 * (matrix + matrix.T))

    def dense(self):
        return self.matrix

    def __matmul__(self, V):
        return self.matrix @ V.to(self.matrix)

    def eigh(self):
        if self._eig is None:
            self._eig = torch.linalg.eigh(self.matrix)
        return self._eig

    def lambda_min(self):
        return float(self.eigh()[0][0])

    def top_eigenpairs(self, k):
        lam, U = self.eigh()
        return lam.flip(0)[:k], U.flip(1)[:, :k]

    def pinv(self, V, rcond=1e-10, *, damping=0.0):
        lam, U = self.eigh()
        mu = lam + damping
        t = rcond * float(mu.abs().max())
        keep = mu.abs() > t
        self.info["last_pinv"] = {"rcond": rcond, "threshold": t, "dropped": int((~keep).sum())}
        return U[:, keep] @ ((U[:, keep].T @ V.to(U)) / mu[keep, None])

    def solve(self, V, *, damping=0.0, method="cholesky"):
        A = self.matrix + damping * torch.eye(self.num_params, dtype=self.matrix.dtype,
                                              device=self.matrix.device)
        L, info = torch.linalg.cholesky_ex(A)
        if info.item() != 0:
            raise ValueError(f"Hessian.solve: H + {damping}·I is not positive definite "
                             f"(λ_min = {self.lambda_min():.6g})")
        return torch.cholesky_solve(V.to(A), L)


def build(model, loss_fn, data, *, params=None, regularizer=None):
    names, tensors = flat_parameters(model, params)
    theta = torch.cat([t.detach().reshape(-1) for t in tensors]).to(torch.float64)
    shapes = [t.shape for t in tensors]
    inputs, targets = data
    model64 = model  # parameters cast per call below

    def loss(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = s.numel()
            parts[n] = flat[i:i + k].reshape(s)
            i += k
        buffers = {n: b.to(torch.float64) if b.is_floating_point() else b
                   for n, b in model64.named_buffers()}
        out = functional_call(model64, {**parts, **buffers}, (inputs.to(torch.float64),))
        value = loss_fn(out, targets)
        if regularizer is not None:
            value = value + regularizer.value(flat)
        return value

    return StandInHessian(torch.func.hessian(loss)(theta))
