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

The winding number itself, ν = (1/2πi) ∫ Tr(u(k)⁻¹ ∂_k u(k)) dk over the twisted periodic
chain (the original code's definition), is computed numerically by :func:`winding_number` from
the bond hoppings every SSHData carries, so that any label can be rechecked independently of
the closed form above.

Degeneracy caveat: at W = 0 and v = 0 (or v = w) the spectrum has degenerate levels, and the
eigenvectors inside a degenerate level are only defined up to a rotation; their images
depend on the LAPACK build. The labels do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.integrate import quad_vec
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
    "study_splits",
    "phase_diagram",
    "winding_number",
    "thermometer",
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
    realisation is from the transition, which is useful for plots and tests);
    intracell: [N, 25] float64 bond hoppings v_c (bond A_c–B_c);
    intercell: [N, 25] float64 bond hoppings w_c (bond B_c–A_{c+1}; column 24 is the periodic
    chain's seam bond B_24–A_0, absent from the open chain the image is made of).
    """

    x: torch.Tensor | None
    y: torch.Tensor
    v: torch.Tensor
    W: torch.Tensor
    margin: torch.Tensor
    intracell: torch.Tensor
    intercell: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index) -> SSHData:
        """The samples at ``index`` (a slice, index tensor or boolean mask) as an SSHData."""
        return SSHData(
            x=None if self.x is None else self.x[index],
            y=self.y[index],
            v=self.v[index],
            W=self.W[index],
            margin=self.margin[index],
            intracell=self.intracell[index],
            intercell=self.intercell[index],
        )

    @staticmethod
    def cat(parts: list[SSHData]) -> SSHData:
        """The samples of ``parts`` one after the other (all with images, or none)."""
        if not parts:
            raise ValueError("SSHData.cat: no parts")
        with_images = [p.x is not None for p in parts]
        if any(with_images) and not all(with_images):
            raise ValueError("SSHData.cat: some parts have images and some do not (images=False)")
        return SSHData(
            x=torch.cat([p.images for p in parts]) if all(with_images) else None,
            y=torch.cat([p.y for p in parts]),
            v=torch.cat([p.v for p in parts]),
            W=torch.cat([p.W for p in parts]),
            margin=torch.cat([p.margin for p in parts]),
            intracell=torch.cat([p.intracell for p in parts]),
            intercell=torch.cat([p.intercell for p in parts]),
        )

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
    return SSHData(
        x=x, y=y, v=v.clone(), W=W.clone(), margin=margin, intracell=v_c, intercell=w_c.contiguous()
    )


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


def _grid(lo: float, hi: float, n: int) -> torch.Tensor:
    return torch.linspace(lo, hi, n, dtype=torch.float64)


def _two_sided(n: int, shift: float) -> torch.Tensor:
    """n values of v, half evenly over [0, 0.8] and half over [1.2, 2], all shifted by ``shift``."""
    low = n // 2
    return torch.cat([_grid(shift, 0.8 + shift, low), _grid(1.2 + shift, 2.0 + shift, n - low)])


def _positive_count(value, name: str, fn: str, low: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{fn}: {name} must be an int >= {low}, got {value!r}")


def study_splits(
    seed: int = 0,
    *,
    n_train: int = 5000,
    n_val: int = 1000,
    n_test: int = 500,
    perturb=(0.01, 0.05),
    n_perturb: int = 500,
    w_ood=W_OOD,
) -> SSHSplits:
    """The data of Cybiński et al.'s 100-CNN study ("5000-1000-500", perturb=True).

    train: W = 0, v evenly over [0, 0.8] ∪ [1.2, 2] (n_train points, half in each interval),
    then for each W_p in ``perturb`` (the "perturbative" augmentation) n_perturb more on the
    same design at disorder W_p;
    val: the same design shifted by +0.001 (n_val at W = 0, n_perturb per W_p);
    test: W = 0, v = linspace(0.002, 2.002, n_test) (the original's test grid);
    ood[W]: the test grid at disorder W, one fresh realisation per sample, W in w_ood.
    ``seed`` fixes every disorder draw (each set has its own stream derived from it).
    """
    fn = "study_splits"
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"{fn}: seed must be an int >= 0, got {seed!r}")
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        _positive_count(value, name, fn, low=2)
    _positive_count(n_perturb, "n_perturb", fn, low=2)
    perturb = [float(w) for w in perturb]
    stream = iter(range(seed * 1000, seed * 1000 + 1000))  # one disorder stream per set

    def design(n: int, shift: float, n_pert: int) -> SSHData:
        parts = [make_ssh(_two_sided(n, shift), 0.0, seed=next(stream))]
        parts += [make_ssh(_two_sided(n_pert, shift), w_p, seed=next(stream)) for w_p in perturb]
        return SSHData.cat(parts)

    train = design(n_train, 0.0, n_perturb)
    val = design(n_val, 0.001, n_perturb)
    v_test = _grid(0.002, 2.002, n_test)
    test = make_ssh(v_test, 0.0, seed=next(stream))
    ood = {float(w): make_ssh(v_test, float(w), seed=next(stream)) for w in w_ood}
    return SSHSplits(train=train, val=val, test=test, ood=ood)


def phase_diagram(v, W, n_realisations: int = 25, seed: int = 0) -> torch.Tensor:
    """The target phase diagram: the fraction of topological realisations (closed-form labels)
    at every (W, v) grid point, [len(W), len(v)] float64 (the original's targets_25_reals are
    this with v = linspace(0.002, 2.002, 200), W = linspace(0, 5, 501), 25 realisations)."""
    fn = "phase_diagram"
    v = finite_vector(v, "v", fn)
    W = finite_vector(W, "W", fn)
    _positive_count(n_realisations, "n_realisations", fn)
    rows = []
    for k, w_dis in enumerate(W.tolist()):
        labels = make_ssh(v.repeat(n_realisations), w_dis, seed=seed * 100_003 + k, images=False).y
        rows.append(labels.reshape(n_realisations, -1).double().mean(0))
    return torch.stack(rows)


def _chiral_block(intracell: np.ndarray, intercell: np.ndarray) -> np.ndarray:
    """u [N, 25, 25]: the sublattice block H_BA of the periodic chain's Hamiltonian.

    Built as the original code does: the full 50×50 periodic Hamiltonian (seam bond B_24–A_0 =
    intercell[:, 24]), permuted into the chiral basis (A = even sites, then B = odd sites), where
    it reads [[0, u†], [u, 0]]; u[-1, 0] is then the seam bond."""
    n = intracell.shape[0]
    H = np.zeros((n, N_SITES, N_SITES))
    c = np.arange(N_CELLS)
    H[:, 2 * c, 2 * c + 1] = intracell  # A_c – B_c
    H[:, 2 * c[:-1] + 1, 2 * c[:-1] + 2] = intercell[:, :-1]  # B_c – A_{c+1}
    H[:, N_SITES - 1, 0] = intercell[:, -1]  # the seam B_24 – A_0
    H = H + H.transpose(0, 2, 1)
    order = np.r_[0:N_SITES:2, 1:N_SITES:2]
    chiral = H[:, order][:, :, order]
    if np.abs(chiral[:, :N_CELLS, :N_CELLS]).max() > 0 or np.abs(chiral[:, N_CELLS:, N_CELLS:]).max() > 0:
        raise AssertionError("the periodic SSH Hamiltonian must be off-diagonal in the chiral basis")
    return chiral[:, N_CELLS:, :N_CELLS]


def winding_number(
    intracell, intercell, *, epsabs: float = 1e-10, limit: int = 20_000, chunk: int = 8
) -> np.ndarray:
    """The winding number of each periodic chain by numerical integration, [N] float64.

    The original definition (PAPERS §3.3): with u the chiral block of the periodic Hamiltonian
    and its seam element twisted, u(k)[-1, 0] = u[-1, 0]·e^{ik},

        ν = (1/2πi) ∫_{-π}^{π} Tr(u(k)⁻¹ ∂_k u(k)) dk,

    evaluated with dense linear solves of u(k) (numpy) and adaptive Gauss–Kronrod quadrature of
    all samples at once (scipy.integrate.quad_vec; absolute error ``epsabs`` in the max norm).
    The label is round(|ν|). It does not use the closed form (label = Σ ln|w_c| > Σ ln|v_c|),
    so it checks it. intracell, intercell: [N, 25] bond hoppings (SSHData.intracell/.intercell).
    Near the transition the integrand is a narrow peak of width ~ |Σ ln|w_c| - Σ ln|v_c||; the
    adaptive subdivision resolves it (``limit`` subintervals at most). Samples are integrated
    ``chunk`` at a time: one sample's narrow peak then refines only its own chunk's subintervals
    (measured: 8 per chunk is 10x faster than all at once on the study's test sets).
    """
    fn = "winding_number"
    a = np.asarray(intracell, dtype=np.float64)
    b = np.asarray(intercell, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != N_CELLS or b.shape != a.shape:
        raise ValueError(
            f"{fn}: intracell and intercell must both be [N, {N_CELLS}], got {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{fn}: the hoppings must be finite")
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"{fn}: chunk must be a positive int, got {chunk!r}")
    blocks = _chiral_block(a, b).astype(np.complex128)
    parts = [
        _winding_integral(blocks[s : s + chunk], epsabs=epsabs, limit=limit)
        for s in range(0, len(blocks), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def _winding_integral(u0: np.ndarray, *, epsabs: float, limit: int) -> np.ndarray:
    """ν [n] of the chiral blocks u0 [n, 25, 25] (one quad_vec call for all of them)."""
    seam = u0[:, -1, 0].copy()
    n = u0.shape[0]

    def integrand(k: float) -> np.ndarray:
        phase = np.exp(1j * k)
        u = u0.copy()
        u[:, -1, 0] = seam * phase
        # ∂_k u is zero but for its seam element, so only its first column enters the trace:
        # Tr(u⁻¹ ∂u) = Σ_j (u⁻¹ ∂u)_jj = (u⁻¹ ∂u[:, 0])_0
        du0 = np.zeros((n, N_CELLS, 1), dtype=np.complex128)
        du0[:, -1, 0] = 1j * phase * seam
        trace = np.linalg.solve(u, du0)[:, 0, 0]
        return np.concatenate([trace.real, trace.imag]) / (2 * np.pi)

    # ∫ Tr(u⁻¹ ∂u) dk / (2πi) = (∫ Im Tr)/(2π) - i (∫ Re Tr)/(2π); the real part is ν
    total, _ = quad_vec(integrand, -np.pi, np.pi, epsabs=epsabs, epsrel=0.0, norm="max", limit=limit)
    return total[n:]


def thermometer(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Thermometer encoding (Buckman et al. 2018; the SSH paper's appendix) of inputs in [0, 1].

    x: [N, C, *S] → [N, C·levels, *S] float32 with channel c·levels + ℓ equal to 1 when
    ℓ < k = ceil(x_c·(levels - 1)), else 0 (the original's 1 - cumsum(one_hot(k)); so k of the
    ``levels`` channels are on, and x = 0 switches none).
    """
    fn = "thermometer"
    _positive_count(levels, "levels", fn, low=2)
    if not isinstance(x, torch.Tensor) or x.dim() < 3 or not x.is_floating_point():
        raise ValueError(f"{fn}: x must be a floating tensor [N, C, *S], got {getattr(x, 'shape', type(x))}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{fn}: x must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    k = torch.ceil(x.double() * (levels - 1))
    ell = torch.arange(levels, dtype=torch.float64).reshape(levels, *([1] * (x.dim() - 2)))
    on = ell < k.unsqueeze(2)  # [N, C, levels, *S]
    return on.reshape(x.shape[0], x.shape[1] * levels, *x.shape[2:]).to(torch.float32)


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
