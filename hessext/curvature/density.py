"""Spectral density of a large curvature by stochastic Lanczos quadrature (SLQ; Lin, Saad & Yang
2016; Ghorbani et al. 2019; PyHessian's density).

For a probe v (Rademacher, ‖v‖² = P) the Lanczos tridiagonal T_m of H from v/‖v‖ gives a
Gauss quadrature of the spectral measure seen by v: nodes θ_k (eigenvalues of T_m) and weights
τ_k² (squared first components of its eigenvectors). Averaged over probes,

    φ(t) = (1/s) Σ_probes Σ_k τ_k² g_σ(t − θ_k)

estimates the eigenvalue density of H (normalised to 1) smoothed by a Gaussian g_σ, and
(P/s) Σ Σ τ_k² f(θ_k) estimates tr f(H) (f = identity: the trace; f = log(· + δ): log det).
Only products H @ V are used, so any curvature object works (dense, matrix-free, structured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hessext._internal.progress import progress_bar

__all__ = ["SpectralDensity", "spectral_density"]


@dataclass
class SpectralDensity:
    """SLQ quadrature of a P×P operator: nodes [s, m] and weights [s, m] (float64) of s probes
    with m Lanczos steps each (each probe's weights sum to 1)."""

    nodes: torch.Tensor
    weights: torch.Tensor
    num_params: int

    def density(self, grid: torch.Tensor | None = None, *, sigma: float | None = None, points: int = 1000):
        """(grid [G], φ [G]): the Gaussian-smoothed eigenvalue density (integrates to ~1). Default
        grid: ``points`` values spanning the nodes ± 3σ; default σ: 1 % of the nodes' range."""
        lo, hi = float(self.nodes.min()), float(self.nodes.max())
        width = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
        sigma = float(sigma) if sigma is not None else 0.01 * width
        if not sigma > 0:
            raise ValueError(f"SpectralDensity.density: sigma must be > 0, got {sigma!r}")
        if grid is None:
            grid = torch.linspace(lo - 3 * sigma, hi + 3 * sigma, points, dtype=torch.float64)
        grid = torch.as_tensor(grid, dtype=torch.float64)
        diff = grid.reshape(-1, 1, 1) - self.nodes.unsqueeze(0)
        kernel = torch.exp(-0.5 * (diff / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return grid, (kernel * self.weights.unsqueeze(0)).sum((1, 2)) / self.nodes.shape[0]

    def trace_of(self, fn) -> float:
        """Estimate of tr f(H) = P · mean over probes of Σ_k τ_k² f(θ_k)."""
        return float(self.num_params * (self.weights * fn(self.nodes)).sum(1).mean())

    def trace(self) -> float:
        """Estimate of tr(H)."""
        return self.trace_of(lambda t: t)

    def logdet(self, damping: float = 0.0) -> float:
        """Estimate of log det(H + δI); refuses nodes with θ + δ <= 0 (not positive definite)."""
        shifted = self.nodes + float(damping)
        if float(shifted.min()) <= 0:
            raise ValueError(
                f"SpectralDensity.logdet: damping must exceed -(smallest Ritz value) = "
                f"{-float(self.nodes.min()):.6g} for H + δI to be positive definite, got {damping!r}"
            )
        return self.trace_of(lambda t: torch.log(t + float(damping)))


def spectral_density(
    hessian, *, num_probes: int = 10, num_steps: int = 80, seed: int = 0, progress: bool | None = None
) -> SpectralDensity:
    """SLQ of any curvature object (``hessian @ V`` is all it uses): ``num_probes`` seeded
    Rademacher probes, ``num_steps`` Lanczos steps each (full reorthogonalisation; a probe whose
    Krylov space is exhausted earlier stops with the exact quadrature). Returns a
    SpectralDensity (``.density()`` for the curve, ``.trace()``, ``.logdet(damping)``)."""
    P = int(hessian.num_params)
    if not (isinstance(num_probes, int) and num_probes >= 1):
        raise ValueError(f"spectral_density: num_probes must be a positive integer, got {num_probes!r}")
    if not (isinstance(num_steps, int) and num_steps >= 1):
        raise ValueError(f"spectral_density: num_steps must be a positive integer, got {num_steps!r}")
    m = min(num_steps, P)
    gen = torch.Generator().manual_seed(int(seed))
    device = getattr(hessian, "device", torch.device("cpu"))
    nodes = torch.zeros(num_probes, m, dtype=torch.float64)
    weights = torch.zeros(num_probes, m, dtype=torch.float64)
    for p in progress_bar(range(num_probes), total=num_probes, desc="spectral density", progress=progress):
        v = (torch.randint(0, 2, (P,), generator=gen, dtype=torch.int64) * 2 - 1).to(torch.float64)
        Q = torch.zeros(P, m, dtype=torch.float64, device=device)
        Q[:, 0] = v.to(device) / math.sqrt(P)
        alpha, beta = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
        steps = m
        for j in range(m):
            w = (hessian @ Q[:, j : j + 1])[:, 0].to(torch.float64)
            alpha[j] = torch.dot(Q[:, j], w)
            for _ in range(2):  # full reorthogonalisation, twice (Kahan-Parlett)
                w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
            b = float(w.norm())
            if j + 1 == m:
                break
            if b <= 1e-12 * max(float(alpha[: j + 1].abs().max()), 1e-300):
                steps = j + 1  # invariant subspace: the quadrature is exact
                break
            beta[j] = b
            Q[:, j + 1] = w / b
        T = torch.diag(alpha[:steps]) + torch.diag(beta[: steps - 1], 1) + torch.diag(beta[: steps - 1], -1)
        theta, S = torch.linalg.eigh(T)
        nodes[p, :steps] = theta
        weights[p, :steps] = S[0].square()
        if steps < m:  # pad with zero-weight copies of a node, so the arrays stay rectangular
            nodes[p, steps:] = theta[-1]
    return SpectralDensity(nodes, weights, P)
