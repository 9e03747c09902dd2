"""Electromagnetic fields seen from different inertial frames: random proper Lorentz
transformations and the pairs of the Siamese-network study (Wetzel et al. 2020;
docs/wetzel-invariants.md).

A field configuration is F = (E, B) ∈ ℝ⁶ (c = 1). A boost with velocity β (γ = 1/√(1 − β²),
n = β/|β|) maps it to

    E' = γ(E + β × B) − (γ − 1)(E·n) n,    B' = γ(B − β × E) − (γ − 1)(B·n) n,

a rotation R to (R E, R B). Every proper orthochronous Lorentz transformation is a rotation
after a boost, and under all of them the two invariants of the field-strength tensor stay
fixed: E·B (its determinant, up to sign) and E² − B².

The pairs: a field F is drawn in a reference frame (E, B ~ N(0, I₃) independently), and a
pair's members are F seen from two frames, each reached by a random boost (direction uniform
on the sphere, speed |β| ~ U[0, BOOST_MAX_SPEED]) followed by a uniformly random rotation.
Pure boosts would leave a shortcut: the field component along the boost is unchanged, so a
network can match pairs on it without finding an invariant.
"""

from __future__ import annotations

import torch

from hessext.datasets._checks import check_float_matrix, check_n_seed
from hessext.datasets._pairs import negatives_by_permutation

__all__ = [
    "BOOST_MAX_SPEED",
    "field_invariants",
    "boost_fields",
    "rotate_fields",
    "random_rotations",
    "random_boosts",
    "lorentz_pairs",
]

BOOST_MAX_SPEED = 0.8


def _check_fields(fields, fn: str) -> torch.Tensor:
    return check_float_matrix(fields, "fields", "E_1, E_2, E_3, B_1, B_2, B_3", fn)


def field_invariants(fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E·B, E² − B²), each [N], of fields [N, 6] = (E, B)."""
    f = _check_fields(fields, "field_invariants")
    e, b = f[:, :3], f[:, 3:]
    return (e * b).sum(1), (e * e).sum(1) - (b * b).sum(1)


def boost_fields(fields: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Fields [N, 6] seen from frames moving with velocities ``beta`` [N, 3] (|β| < 1)."""
    f = _check_fields(fields, "boost_fields")
    if beta.shape != (len(f), 3):
        raise ValueError(f"boost_fields: beta must be [{len(f)}, 3], got {tuple(beta.shape)}")
    speed2 = (beta * beta).sum(1, keepdim=True)
    if (speed2 >= 1).any():
        raise ValueError("boost_fields: every |beta| must be < 1 (the speed of light is 1)")
    e, b = f[:, :3], f[:, 3:]
    gamma = torch.rsqrt(1.0 - speed2)
    # (γ − 1)(v·n)n = (γ − 1)/β² (v·β)β, written with γ²/(γ + 1) = (γ − 1)/β² (finite at β = 0)
    k = gamma * gamma / (gamma + 1.0)
    e2 = gamma * (e + torch.linalg.cross(beta, b)) - k * (e * beta).sum(1, keepdim=True) * beta
    b2 = gamma * (b - torch.linalg.cross(beta, e)) - k * (b * beta).sum(1, keepdim=True) * beta
    return torch.cat([e2, b2], dim=1)


def rotate_fields(fields: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Fields [N, 6] with E and B rotated by ``rotations`` [N, 3, 3]."""
    f = _check_fields(fields, "rotate_fields")
    e = torch.einsum("nij,nj->ni", rotations, f[:, :3])
    b = torch.einsum("nij,nj->ni", rotations, f[:, 3:])
    return torch.cat([e, b], dim=1)


def random_rotations(n: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """n rotation matrices [n, 3, 3] drawn uniformly from SO(3) (normalised Gaussian
    quaternions)."""
    q = torch.randn(n, 4, generator=gen, dtype=dtype)
    w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=1) for r in rows], dim=1)


def random_boosts(n: int, gen: torch.Generator, max_speed: float = BOOST_MAX_SPEED, dtype=torch.float64):
    """n boost velocities [n, 3]: directions uniform on the sphere, speeds ~ U[0, max_speed]."""
    d = torch.randn(n, 3, generator=gen, dtype=dtype)
    speed = max_speed * torch.rand(n, 1, generator=gen, dtype=dtype)
    return d / d.norm(dim=1, keepdim=True) * speed


def lorentz_pairs(n: int, *, seed: int):
    """(a, b, same): n pairs of fields [n, 6] float64 = (E_1, E_2, E_3, B_1, B_2, B_3), and a
    bool [n] marking the positives.

    A positive pair is one field configuration (E, B ~ N(0, I₃) in a reference frame) seen
    from two frames, each reached from the reference frame by a random boost then a random
    rotation (module docstring). Then ⌊n/2⌋ pairs chosen at random become negatives: their b
    is replaced by the b of another pair (a random derangement). Seeded by ``seed`` alone."""
    check_n_seed(n, seed, "lorentz_pairs")
    gen = torch.Generator().manual_seed(seed)
    rest = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    views = []
    for _ in range(2):
        boosted = boost_fields(rest, random_boosts(n, gen))
        views.append(rotate_fields(boosted, random_rotations(n, gen)))
    a, b = views
    b, same = negatives_by_permutation(b, gen)
    return a, b, same
