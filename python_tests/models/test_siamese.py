"""The pair networks: SiameseNet's distance head by hand, symmetry, seeding; TwinNet's shapes."""

import pytest
import torch

from hessext.models import SiameseNet, TwinNet, mlp, num_parameters


def test_siamese_head_is_the_latent_distance():
    model = SiameseNet(4, 2, (8, 8), seed=0).double()
    with torch.no_grad():
        model.log_scale.fill_(0.7)
        model.bias.fill_(1.5)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=gen).double(), torch.randn(5, 4, generator=gen).double()
    za, zb = model.encode(a), model.encode(b)
    want = 1.5 - torch.exp(torch.tensor(0.7)).double() * ((za - zb) ** 2).sum(1)
    torch.testing.assert_close(model(a, b), want)
    torch.testing.assert_close(model(a, b), model(b, a), rtol=0, atol=0)
    assert za.shape == (5, 2)


def test_sizes_seeds_and_twin_shapes():
    assert num_parameters(SiameseNet(4, 1)) == 4 * 64 + 64 + 64 * 64 + 64 + 64 + 1 + 2
    assert num_parameters(TwinNet(1)) == num_parameters(mlp(2, 64, 64, 1))
    one, two = SiameseNet(6, 1, seed=4), SiameseNet(6, 1, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(one.parameters(), two.parameters()))
    out = TwinNet(3, (5,), seed=0)(torch.zeros(7, 3), torch.ones(7, 3))
    assert out.shape == (7,)
    assert isinstance(mlp(2, 3, 1, activation=torch.nn.SiLU)[1], torch.nn.SiLU)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: SiameseNet(0), "in_features must be a positive int"),
        (lambda: SiameseNet(4, latent=0), "latent must be a positive int"),
        (lambda: SiameseNet(4, hidden=()), "hidden must be a non-empty sequence"),
        (lambda: TwinNet(2, hidden=(4, -1)), "hidden must be a non-empty sequence"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()
