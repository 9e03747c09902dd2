"""Lorentz-transformed fields: the boost against the field-strength tensor's transformation
F' = Λ F Λᵀ, the invariants E·B and E² − B² of the generated pairs, rotations in SO(3)."""

import pytest
import torch

from hessext.datasets import field_invariants, lorentz_pairs
from hessext.datasets.lorentz import (
    BOOST_MAX_SPEED,
    boost_fields,
    random_boosts,
    random_rotations,
    rotate_fields,
)

# float64 with O(1) fields: a boost and a rotation are a few dozen roundings of ~1e-16 each,
# amplified by γ(1 + β) ≤ 3; 1e-10 relative (the bar) leaves five orders of margin.
REL = 1e-10


def _tensor(E, B):
    """F^{μν} (metric +−−−): F^{0i} = −E_i, F^{ij} = −ε_{ijk} B_k."""
    F = torch.zeros(4, 4, dtype=torch.float64)
    F[0, 1:], F[1:, 0] = -E, E
    F[1, 2], F[2, 1] = -B[2], B[2]
    F[1, 3], F[3, 1] = B[1], -B[1]
    F[2, 3], F[3, 2] = -B[0], B[0]
    return F


def _boost_matrix(beta):
    """Λ^μ_ν of the frame moving with velocity β."""
    b2 = beta @ beta
    g = 1 / torch.sqrt(1 - b2)
    L = torch.eye(4, dtype=torch.float64)
    L[0, 0] = g
    L[0, 1:] = L[1:, 0] = -g * beta
    L[1:, 1:] += (g - 1) * torch.outer(beta, beta) / b2
    return L


def test_boost_matches_the_tensor_transformation():
    gen = torch.Generator().manual_seed(0)
    fields = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    beta = random_boosts(20, gen, max_speed=0.95)
    got = boost_fields(fields, beta)
    for f, v, g in zip(fields, beta, got):
        L = _boost_matrix(v)
        Fp = L @ _tensor(f[:3], f[3:]) @ L.T
        want = torch.cat([-Fp[0, 1:], torch.stack([-Fp[2, 3], Fp[1, 3], -Fp[1, 2]])])
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


def test_textbook_case_electric_field_boosted_across_it():
    # E = E ŷ seen from a frame moving along x: E' = γE ŷ, B' = −γβE ẑ
    beta, E = 0.6, 2.0
    gamma = 1 / (1 - beta**2) ** 0.5
    got = boost_fields(
        torch.tensor([[0, E, 0, 0, 0, 0]], dtype=torch.float64),
        torch.tensor([[beta, 0, 0]], dtype=torch.float64),
    )
    want = torch.tensor([[0, gamma * E, 0, 0, 0, -gamma * beta * E]], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=1e-15)


def test_boost_back_and_zero_boost_are_the_identity():
    gen = torch.Generator().manual_seed(1)
    f = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    beta = random_boosts(50, gen)
    torch.testing.assert_close(boost_fields(boost_fields(f, beta), -beta), f, rtol=1e-12, atol=1e-12)
    assert torch.equal(boost_fields(f, torch.zeros(50, 3, dtype=torch.float64)), f)


def test_rotations_are_proper_and_uniform_enough():
    gen = torch.Generator().manual_seed(2)
    R = random_rotations(4000, gen)
    eye = torch.eye(3, dtype=torch.float64).expand(4000, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(4000, dtype=torch.float64), rtol=0, atol=1e-14)
    # Haar measure: E[R] = 0 (each entry's standard error is 1/√(3·4000) ≈ 0.009)
    assert R.mean(0).abs().max() < 0.05


def test_generated_pairs_are_related_by_lorentz_transformations():
    n = 4001
    a, b, same = lorentz_pairs(n, seed=3)
    assert a.shape == b.shape == (n, 6) and a.dtype == torch.float64
    assert same.dtype == torch.bool and int((~same).sum()) == n // 2
    (eb_a, d_a), (eb_b, d_b) = field_invariants(a), field_invariants(b)
    scale = (a * a).sum(1)  # |E|² + |B|², the size both invariants are measured against
    p = same
    assert ((eb_a - eb_b)[p].abs() / scale[p]).max() < REL
    assert ((d_a - d_b)[p].abs() / scale[p]).max() < REL
    # the members of a positive pair differ (each is a boosted and rotated view)
    assert ((a - b)[p].norm(dim=1) / scale[p].sqrt()).min() > 1e-3
    # negatives pair different fields: their invariants differ by O(1) for almost all
    mismatch = ((eb_a - eb_b).abs() + (d_a - d_b).abs())[~p] / scale[~p]
    assert (mismatch > 1e-3).float().mean() > 0.99


def test_rotation_alone_keeps_invariants_and_the_frames_are_boosted():
    gen = torch.Generator().manual_seed(5)
    f = torch.randn(100, 6, generator=gen, dtype=torch.float64)
    g = rotate_fields(f, random_rotations(100, gen))
    for u, v in zip(field_invariants(f), field_invariants(g)):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    beta = random_boosts(1000, gen)
    speed = beta.norm(dim=1)
    assert speed.max() <= BOOST_MAX_SPEED and speed.mean() == pytest.approx(BOOST_MAX_SPEED / 2, abs=0.03)


def test_pairs_are_seeded():
    one, again, other = lorentz_pairs(30, seed=1), lorentz_pairs(30, seed=1), lorentz_pairs(30, seed=2)
    assert all(torch.equal(u, v) for u, v in zip(one, again))
    assert not torch.equal(one[0], other[0])


def test_bad_input():
    with pytest.raises(ValueError, match="n must be >= 1"):
        lorentz_pairs(0, seed=0)
    with pytest.raises(TypeError, match="n must be an int"):
        lorentz_pairs(3.5, seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        lorentz_pairs(3, seed=None)
    f = torch.zeros(2, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"float tensor \[N, 6\]"):
        field_invariants(torch.zeros(2, 5))
    with pytest.raises(TypeError, match="fields must be a torch.Tensor"):
        field_invariants([[0.0] * 6])
    with pytest.raises(ValueError, match="must be < 1"):
        boost_fields(f, torch.tensor([[1.0, 0, 0], [0, 0, 0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"beta must be \[2, 3\]"):
        boost_fields(f, torch.zeros(3, 3, dtype=torch.float64))
