"""The Ising networks: parameter counts of the docstring table, the correlation layer against a
brute-force periodic correlation, what a 1×1 field can compute (an affine function of m), the
autoencoder's odd latent, bad input."""

import pytest
import torch

from hessext.models import (
    CorrelationProbe,
    IsingAutoencoder,
    PhaseCNN,
    PhaseMLP,
    num_parameters,
    spins_to_input,
)


def _spins(n, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (n, L, L), generator=g) * 2 - 1).to(torch.int8)


def test_parameter_counts():
    assert num_parameters(PhaseCNN(8)) == 11 * 8 + 1
    assert num_parameters(PhaseMLP(16, 32)) == (16 * 16 + 2) * 32 + 1
    for rf in ((1, 1), (1, 2), (16, 16)):
        assert num_parameters(CorrelationProbe(16, rf, 4)) == 4 * (rf[0] * rf[1] + 2) + 3
    assert num_parameters(IsingAutoencoder(8, 16)) == 64 * (16 + 2) + 2 * 16
    assert num_parameters(IsingAutoencoder(8, 16, variational=True)) == 64 * (16 + 3) + 2 * 16 + 1


@pytest.mark.parametrize("L,rf", [(5, (1, 2)), (6, (3, 2)), (4, (4, 4)), (7, (1, 1))])
def test_correlations_are_the_periodic_correlation(L, rf):
    net = CorrelationProbe(L, rf, 3, seed=1).double()
    x = spins_to_input(_spins(4, L), torch.float64)
    got = net.correlations(x)
    want = torch.zeros_like(got)
    for a in range(rf[0]):
        for b in range(rf[1]):
            shifted = torch.roll(x, shifts=(-a, -b), dims=(2, 3))  # s[i + a, j + b]
            want += net.weight[:, a, b].view(1, -1, 1, 1) * shifted
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_a_one_by_one_field_only_sees_the_signed_magnetisation():
    """tanh(w s + b) for s = ±1 is affine in s, so Q(S) = α + β m(S) exactly."""
    L = 6
    net = CorrelationProbe(L, (1, 1), 4, seed=2).double()
    s = _spins(64, L, seed=3)
    with torch.no_grad():
        q = net.bottleneck(spins_to_input(s, torch.float64))
    m = s.double().mean(dim=(1, 2))
    A = torch.stack([torch.ones_like(m), m], 1)
    coef = torch.linalg.lstsq(A, q.unsqueeze(1)).solution
    torch.testing.assert_close(A @ coef, q.unsqueeze(1), rtol=0, atol=1e-12)


def test_autoencoder_latent_is_odd_and_heads_are_sigmoids():
    ae = IsingAutoencoder(6, 8, seed=0)
    x = spins_to_input(_spins(10, 6))
    torch.testing.assert_close(ae.encode(-x), -ae.encode(x))
    assert ae(x).shape == (10, 36) and bool((ae(x).abs() < 1).all())
    logits = PhaseCNN(seed=0)(x)
    assert logits.shape == (10, 2) and bool((logits[:, 0] == 0).all())
    vae = IsingAutoencoder(6, 8, variational=True, seed=0)
    assert torch.isfinite(vae.elbo_loss(x))
    with pytest.raises(ValueError, match="not variational"):
        ae.elbo_loss(x)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: PhaseMLP(1), "L must be an int >= 2"),
        (lambda: IsingAutoencoder(2.5), "L must be an int >= 2"),
        (lambda: CorrelationProbe(8, (1, 9)), "receptive_field"),
        (lambda: spins_to_input(torch.ones(4, 4, dtype=torch.int8)), "spins must be"),
    ],
)
def test_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
