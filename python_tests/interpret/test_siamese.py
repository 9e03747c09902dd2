"""Siamese tools: accuracy of a pair model with an exact invariant as its latent (brute-force
count), reproducible training that leaves the caller's RNG alone, the model left unchanged by
evaluation, and clear errors."""

import pytest
import torch
from torch import nn

from hessext.datasets import central_potential_pairs, kepler_invariants
from hessext.interpret import siamese_accuracy, siamese_latent, train_siamese
from hessext.models import SiameseNet
from hessext.testing import assert_same_state, model_state, single_thread


class ExactLz(nn.Module):
    """A pair model whose latent is L_z itself: "same" when |ΔL_z| < delta."""

    def __init__(self, delta: float):
        super().__init__()
        self.delta = nn.Parameter(torch.tensor(delta, dtype=torch.float64))

    @staticmethod
    def encode(s):
        return (s[:, 0] * s[:, 3] - s[:, 1] * s[:, 2]).unsqueeze(1)

    def forward(self, a, b):
        return self.delta**2 - (self.encode(a) - self.encode(b)).pow(2).sum(1)


def test_accuracy_of_an_exact_invariant_is_the_brute_force_count():
    a, b, same = central_potential_pairs(2000, seed=0, steps=300)
    delta = 0.02
    model = ExactLz(delta)
    lz_a, lz_b = kepler_invariants(a).angular_momentum, kepler_invariants(b).angular_momentum
    called_same = (lz_a - lz_b).abs() < delta
    want = (called_same == same).double().mean().item()
    got = siamese_accuracy(model, a, b, same, batch_size=333)
    assert got == want
    # positives all share L_z (to the integrator's accuracy), so the only errors are negatives
    # whose orbits happen to have nearly the same L_z: L_z is a sufficient invariant here
    assert (called_same[same]).all() and got > 0.97


def test_training_is_seeded_and_learns_an_easy_invariant():
    # pairs of points on one line x + y = c (related by a shift along it): c is the invariant
    gen = torch.Generator().manual_seed(0)
    n = 2000
    c = 2 * torch.rand(n, generator=gen) - 1
    s1, s2 = 2 * torch.rand(n, generator=gen) - 1, 2 * torch.rand(n, generator=gen) - 1
    a, b = torch.stack([s1, c - s1], 1), torch.stack([s2, c - s2], 1)
    same = torch.rand(n, generator=gen) < 0.5
    b[~same] = b[~same].roll(1, 0)
    rng_before = torch.get_rng_state()
    m1, m2 = SiameseNet(2, 1, (16,), seed=3), SiameseNet(2, 1, (16,), seed=3)
    with single_thread():
        h1 = train_siamese(m1, a, b, same, epochs=10, lr=1e-2, batch_size=128, seed=5)
        h2 = train_siamese(m2, a, b, same, epochs=10, lr=1e-2, batch_size=128, seed=5)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert h1 == h2 and len(h1) == 10 * 16
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert sum(h1[-16:]) < 0.5 * sum(h1[:16])
    assert siamese_accuracy(m1, a, b, same) > 0.85
    z = siamese_latent(m1.encoder, a)
    assert z.shape == (n, 1)
    # the latent is the invariant, up to an affine map
    assert abs(torch.corrcoef(torch.stack([z[:, 0], c]))[0, 1]) > 0.99


def test_evaluation_leaves_the_model_as_it_was():
    model = SiameseNet(4, 2, (8,), seed=0)
    model.train()
    a, b, same = central_potential_pairs(20, seed=0, steps=20)
    state = model_state(model)
    with torch.no_grad():
        siamese_accuracy(model, a, b, same)
        siamese_latent(model.encoder, a)
    assert_same_state(model, state)
    assert model.training


def test_bad_input():
    model = SiameseNet(4, 1, (8,), seed=0)
    a, b, same = central_potential_pairs(10, seed=0, steps=10)
    with pytest.raises(ValueError, match="same must be a bool tensor"):
        train_siamese(model, a, b, same.float(), epochs=1)
    with pytest.raises(ValueError, match="same must be a bool tensor"):
        siamese_accuracy(model, a, b, same[:5])
    with pytest.raises(ValueError, match="a and b must have the same shape"):
        train_siamese(model, a, b[:, :3], same, epochs=1)
    with pytest.raises(TypeError, match="train_siamese: a must be a torch.Tensor"):
        train_siamese(model, a.tolist(), b, same, epochs=1)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        train_siamese(model, a, b, same, epochs=0)
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        train_siamese(model, a, b, same, epochs=1, lr=0.0)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        siamese_latent(lambda x: x, a)
    with pytest.raises(ValueError, match="empty batch"):
        siamese_latent(model.encoder, a[:0])
