"""The disordered Su-Schrieffer-Heeger (SSH) chain (Cybiński et al. 2024; docs/methods.md §8).

One particle on M = 50 sites (25 cells, sites 2c = A_c and 2c+1 = B_c), open boundaries:

    H = Σ_{c=0}^{24} v_c (|A_c⟩⟨B_c| + h.c.) + Σ_{c=0}^{23} w_c (|B_c⟩⟨A_{c+1}| + h.c.)

with intracell hoppings v_c = v + W·r_c and intercell hoppings w_c = w + (W/2)·r'_c,
r, r' ~ U[-1/2, 1/2] i.i.d. per bond, w = 1.

Input image: X[j, i] = |ψ_i(j)|², site j × eigenstate i (eigenstates sorted by energy),
shape [1, 50, 50]. (The hopping signs do not matter: the chain is bipartite, so flipping the
sign of any hopping is a gauge transformation that leaves every |ψ_i(j)|² unchanged.)

Label: the winding number of the *periodic* chain with the same disorder, which for one
disorder realisation reduces exactly to

    topological (1)  ⇔  Σ_{c=0}^{24} ln|w_c| > Σ_{c=0}^{24} ln|v_c|.

The periodic chain has 25 intercell bonds and the open chain only 24 (the seam bond
B_24–A_0 is missing), so we draw 25 intercell bonds per sample: w_0..w_23 enter the open-chain
Hamiltonian, and all 25 (w_24 being the seam bond) enter the winding rule. Without disorder
(W = 0) the rule reads v < 1.

Degeneracy caveat: at W = 0 and v = 0 (or v = w) the spectrum has degenerate levels, and the
eigenvectors inside a degenerate level are only defined up to a rotation; their images
depend on the LAPACK build. The labels do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from scipy.optimize import brentq

from hessext.datasets._checks import finite_vector

__all__ = [
    "N_SITES",
    "N_CELLS",
    "SSHData",
    "SSHSplits",
    "make_ssh",
    "ssh_splits",
    "expected_log_abs_uniform",
    "critical_v",
]

N_CELLS = 25
N_SITES = 2 * N_CELLS
W_OOD = (0.15, 0.5, 1.0, 2.0)


@dataclass
class SSHData:
    """One SSH data set.

    x: [N, 1, 50, 50] float32 images |ψ_i(j)|² (site j, eigenstate i), or None when made
    with images=False;
    y: [N] int64, 1 topological, 0 trivial;
    v: [N] float64 mean intracell hopping; W: [N] float64 disorder strength;
    margin: [N] float64, Σ ln|w_c| - Σ ln|v_c| (y = margin > 0; its size says how far the
    realisation is from the transition, which is useful for plots and tests).
    """

    x: torch.Tensor | None
    y: torch.Tensor
    v: torch.Tensor
    W: torch.Tensor
    margin: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    @property
    def images(self) -> torch.Tensor:
        """x, the [N, 1, 50, 50] images (ValueError for a set made with images=False)."""
        if self.x is None:
            raise ValueError("SSHData: this set was made with images=False (labels only)")
        return self.x


def make_ssh(v, W=0.0, seed: int = 0, *, w: float = 1.0, images: bool = True) -> SSHData:
    """Disordered SSH samples, one per entry of v.

    v: [N] mean intracell hoppings; W: scalar or [N] disorder strengths (≥ 0); seed: the
    disorder draw (torch.Generator), so equal arguments give equal data; w: mean intercell
    hopping; images=False skips the diagonalisation (x is None) when only labels are wanted,
    e.g. for phase diagrams. float64 throughout; the images are rounded to float32 at the end.
    """
    v = finite_vector(v, "v", "make_ssh")
    W = finite_vector(W, "W", "make_ssh")
    if (W < 0).any():
        raise ValueError(f"make_ssh: W must be >= 0, got min {W.min().item()}")
    if W.numel() == 1:
        W = W.expand(v.numel())
    if W.shape != v.shape:
        raise ValueError(
            f"make_ssh: W must be a scalar or have v's shape {tuple(v.shape)}, got {tuple(W.shape)}"
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"make_ssh: seed must be an int, got {type(seed).__name__}")
    n = v.numel()
    if n == 0:
        raise ValueError("make_ssh: v is empty (one sample per entry of v)")
    gen = torch.Generator().manual_seed(seed)
    r_intra = torch.rand(n, N_CELLS, generator=gen, dtype=torch.float64) - 0.5
    r_inter = torch.rand(n, N_CELLS, generator=gen, dtype=torch.float64) - 0.5
    v_c = v[:, None] + W[:, None] * r_intra
    w_c = w + (W[:, None] / 2) * r_inter  # column 24 is the periodic chain's seam bond

    # The open chain is tridiagonal with zero diagonal and off-diagonal v_0, w_0, v_1, ...,
    # w_23, v_24. LAPACK's tridiagonal solver (stemr) per sample is as fast as one batched
    # dense torch.linalg.eigh of the [N, 50, 50] stack on one thread (~0.4 ms per sample),
    # and unlike the dense solver it runs no BLAS threads, which on a shared 2-core machine
    # made the batched call 20-50x slower (measured: 3000 samples in 30-60 s vs 1.2 s).
    x = None
    offdiag = torch.zeros(n, N_SITES - 1, dtype=torch.float64)
    offdiag[:, 0::2] = v_c
    offdiag[:, 1::2] = w_c[:, :-1]
    if images:
        diag = np.zeros(N_SITES)
        images_np = np.empty((n, 1, N_SITES, N_SITES), dtype=np.float32)
        for k, e in enumerate(offdiag.numpy()):
            _, vecs = eigh_tridiagonal(diag, e)  # vecs[j, i] = ψ_i(j), energies ascending in i
            images_np[k, 0] = np.square(vecs)
        x = torch.from_numpy(images_np)

    # ln|0| = -inf is the right limit (a cut bond): the comparison below stays correct.
    margin = torch.log(w_c.abs()).sum(1) - torch.log(v_c.abs()).sum(1)
    y = (margin > 0).long()
    return SSHData(x=x, y=y, v=v.clone(), W=W.clone(), margin=margin)


@dataclass
class SSHSplits:
    """The original design: train/val/test at W = 0 and the out-of-distribution sets
    ``ood[W]`` for W in (0.15, 0.5, 1.0, 2.0)."""

    train: SSHData
    val: SSHData
    test: SSHData
    ood: dict = field(default_factory=dict)


def ssh_splits(seed: int = 0, n_per_split: int = 500, *, w_ood=W_OOD) -> SSHSplits:
    """The training design of Cybiński et al.

    train: W = 0, v on an even grid over [0, 0.8] ∪ [1.2, 2] (n_per_split points, half in each
    interval: the gap around the transition v = 1 is what the OOD sets probe);
    val, test: W = 0, v ~ U[0, 2] (seeded);
    ood[W]: v ~ U[0, 2] with disorder W, for W in w_ood.
    Each split has n_per_split samples. seed fixes every random draw; different splits use
    different streams derived from it.
    """
    if not isinstance(n_per_split, int) or isinstance(n_per_split, bool) or n_per_split < 2:
        raise ValueError(f"ssh_splits: n_per_split must be an int >= 2, got {n_per_split!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"ssh_splits: seed must be an int, got {type(seed).__name__}")
    n_low = n_per_split // 2
    v_train = torch.cat(
        [
            torch.linspace(0.0, 0.8, n_low, dtype=torch.float64),
            torch.linspace(1.2, 2.0, n_per_split - n_low, dtype=torch.float64),
        ]
    )
    gen = torch.Generator().manual_seed(seed)

    def uniform_v():
        return 2.0 * torch.rand(n_per_split, generator=gen, dtype=torch.float64)

    # Disorder seeds derived from the split seed, one stream per set, so that adding an OOD
    # set does not change the others.
    train = make_ssh(v_train, 0.0, seed=seed)
    val = make_ssh(uniform_v(), 0.0, seed=seed + 1)
    test = make_ssh(uniform_v(), 0.0, seed=seed + 2)
    ood = {}
    for k, w_dis in enumerate(w_ood):
        ood[float(w_dis)] = make_ssh(uniform_v(), float(w_dis), seed=seed + 3 + k)
    return SSHSplits(train=train, val=val, test=test, ood=ood)


def expected_log_abs_uniform(a: float, b: float) -> float:
    """E ln|a + b·r| for r ~ U[-1/2, 1/2], in closed form.

    With u = a + b r, ∫ ln|u| du = u ln|u| - u =: F(u) (F(0) = 0, the integrable
    singularity), so the mean is (F(a + b/2) - F(a - b/2)) / b, and ln|a| when b = 0.
    """
    a, b = float(a), abs(float(b))
    if b == 0.0:
        return math.log(abs(a)) if a != 0.0 else -math.inf

    def antiderivative(u: float) -> float:
        return u * math.log(abs(u)) - u if u != 0.0 else 0.0

    return (antiderivative(a + b / 2) - antiderivative(a - b / 2)) / b


def critical_v(W: float, w: float = 1.0) -> float:
    """Disorder-averaged critical intracell hopping v_c(W) ≥ 0, the root of
    E ln|w + (W/2) r| = E ln|v + W r| (the infinite chain's transition; v < v_c is topological).

    E ln|v + W r| increases with v ≥ 0 (its derivative is ln|(v + W/2)/(v - W/2)| / W), so the
    root is unique when it exists. At v = 0 the condition reads ln(W/2) - 1 = E ln|w + (W/2) r|,
    which holds exactly at W = 4w: v_c(W) falls to 0 there, and for W > 4w even v = 0 is on the
    trivial side (ValueError).
    """
    W = float(W)
    if not (W >= 0 and math.isfinite(W)):
        raise ValueError(f"critical_v: W must be finite and >= 0, got {W}")
    if W == 0.0:
        return abs(w)
    if W > 4 * abs(w):
        raise ValueError(f"critical_v: no topological phase for W > 4w = {4 * abs(w)}, got W = {W}")
    target = expected_log_abs_uniform(w, W / 2)

    def gap(v: float) -> float:
        return expected_log_abs_uniform(v, W) - target

    if gap(0.0) >= 0:  # W within round-off of 4w
        return 0.0
    hi = 1.0
    while gap(hi) <= 0:
        hi *= 2.0
    return brentq(gap, 0.0, hi, xtol=1e-14, rtol=1e-14)
