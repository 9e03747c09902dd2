"""Lanczos for the extreme eigenpairs of a symmetric operator known only by its products.

Full reorthogonalisation (two passes of classical Gram-Schmidt against every previous Lanczos
vector) keeps the basis orthonormal to rounding, so Ritz values do not duplicate and the cheap
residual estimate |β_m s_{m,i}| equals the true ‖H u_i − θ_i u_i‖. Memory: P × (iterations)
float64 — fine for the tens to hundreds of iterations extreme eigenpairs need.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["lanczos"]


def lanczos(
    matmat: Callable[[torch.Tensor], torch.Tensor],
    P: int,
    k: int,
    *,
    which: str = "largest",
    tol: float = 1e-10,
    max_iter: int | None = None,
    seed: int = 0,
    device=None,
    check_every: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k extreme eigenpairs of the symmetric [P, P] operator ``matmat`` ([P, M] → [P, M]).

    which='largest': values descending; 'smallest': values ascending; vectors [P, k] (float64).
    Stops when all k wanted Ritz pairs satisfy ‖H u − θ u‖ ≤ tol·max|θ| (residual-based), or the
    Krylov space is exhausted (then the answer is exact). Raises RuntimeError if max_iter
    (default min(P, max(10k, 200)+k)) iterations do not converge."""
    if which not in ("largest", "smallest"):
        raise ValueError(f"lanczos: which must be 'largest' or 'smallest', got {which!r}")
    if not isinstance(k, int) or not 1 <= k <= P:
        raise ValueError(f"lanczos: k must be an integer in [1, P={P}], got {k!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    max_iter = min(P, max(10 * k, 200) + k) if max_iter is None else min(P, int(max_iter))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    Q = torch.zeros(P, max_iter + 1, dtype=torch.float64, device=device)
    q = torch.randn(P, generator=gen, dtype=torch.float64).to(device)
    Q[:, 0] = q / q.norm()
    alpha = torch.zeros(max_iter, dtype=torch.float64)
    beta = torch.zeros(max_iter, dtype=torch.float64)
    m = 0
    exhausted = False
    theta = S = None
    for j in range(max_iter):
        w = matmat(Q[:, j : j + 1]).to(torch.float64)[:, 0]
        alpha[j] = torch.dot(Q[:, j], w)
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        b = w.norm()
        beta[j] = b
        m = j + 1
        scale = max(float(alpha[:m].abs().max()), 1e-300)
        if float(b) <= 1e-13 * scale:
            if m >= P:
                exhausted = True
            else:  # invariant subspace found: continue with a fresh orthogonal direction
                r = torch.randn(P, generator=gen, dtype=torch.float64).to(device)
                for _ in range(2):
                    r = r - Q[:, :m] @ (Q[:, :m].T @ r)
                w, b = r, r.norm()
                beta[j] = 0.0
                Q[:, m] = w / b
                continue
        else:
            Q[:, m] = w / b
        if exhausted or m >= P or (m >= k and (m % check_every == 0 or m == max_iter)):
            T = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
            theta, S = torch.linalg.eigh(T)
            sel = slice(m - k, m) if which == "largest" else slice(0, k)
            residual = (float(beta[m - 1]) * S[-1, sel]).abs()
            if exhausted or m >= P or bool((residual <= tol * max(float(theta.abs().max()), 1e-300)).all()):
                break
    else:
        raise RuntimeError(
            f"lanczos: {k} {which} eigenpairs did not converge to tol={tol:g} in "
            f"{max_iter} iterations; raise max_iter or tol"
        )
    if theta is None or theta.numel() != m:
        T = torch.diag(alpha[:m]) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
        theta, S = torch.linalg.eigh(T)
    sel = slice(m - k, m) if which == "largest" else slice(0, k)
    values, vectors = theta[sel].to(device), Q[:, :m] @ S[:, sel].to(device)
    if which == "largest":
        values, vectors = values.flip(0), vectors.flip(1)
    return values, vectors
