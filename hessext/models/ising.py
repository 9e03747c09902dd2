"""The networks of the Ising interpretation study (docs/wetzel-ising.md).

All take spins as float tensors [N, 1, L, L] (±1; :func:`spins_to_input` converts the int8
configurations of :func:`hessext.datasets.ising`) and are ordinary nn.Modules, so the whole
toolbox (Hessians, influence, extrapolation scores) runs on them.

| model | role | output |
|---|---|---|
| PhaseCNN | phase classifier (convolutions, global average) | logits [N, 2] |
| PhaseMLP | phase classifier (dense) | logits [N, 2] |
| CorrelationProbe | receptive field → average → bottleneck Q(S) → sigmoid(w Q + b) | logits [N, 2] |
| IsingAutoencoder | (variational) autoencoder with a one-number latent | reconstruction [N, L²] |

The two-logit heads [0, z] make softmax equal to sigmoid(z), so the mean cross-entropy of
:func:`hessext.training.train` is the binary cross-entropy (ln 2 for a constant guess).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hessext.models.common import seeded

__all__ = ["spins_to_input", "PhaseCNN", "PhaseMLP", "CorrelationProbe", "IsingAutoencoder"]


def spins_to_input(spins: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """int8 configurations [N, L, L] → network inputs [N, 1, L, L] of ±1 in ``dtype``."""
    if spins.dim() != 3:
        raise ValueError(f"spins_to_input: spins must be [N, L, L], got {tuple(spins.shape)}")
    return spins.to(dtype).unsqueeze(1)


def _check_L(L, who: str) -> int:
    if isinstance(L, bool) or not isinstance(L, int) or L < 2:
        raise ValueError(f"{who}: L must be an int >= 2, got {L!r}")
    return L


class _TwoLogits(nn.Module):
    """z [N, 1] → logits [N, 2] = [0, z]: softmax = (1 - σ(z), σ(z))."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(z), z], dim=1)


class PhaseCNN(nn.Module):
    """Phase classifier: Conv2d(1 → C, 3×3, circular padding) → ReLU → global average →
    Linear(C → 1) → [0, z]. x [N, 1, L, L] → logits [N, 2] (class 1: ordered). P = 11C + 1,
    independent of L."""

    def __init__(self, channels: int = 8, *, seed: int | None = None):
        super().__init__()
        with seeded(seed):
            self.conv = nn.Conv2d(1, channels, 3, padding=1, padding_mode="circular")
            self.act = nn.ReLU()
            self.fc = nn.Linear(channels, 1)
        self.head = _TwoLogits()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.act(self.conv(x)).mean(dim=(2, 3))))


class PhaseMLP(nn.Module):
    """Phase classifier: flatten → Linear(L² → H) → ReLU → Linear(H → 1) → [0, z].
    x [N, 1, L, L] → logits [N, 2]."""

    def __init__(self, L: int, hidden: int = 32, *, seed: int | None = None):
        super().__init__()
        L = _check_L(L, "PhaseMLP")
        with seeded(seed):
            self.hidden = nn.Linear(L * L, hidden)
            self.act = nn.ReLU()
            self.fc = nn.Linear(hidden, 1)
        self.head = _TwoLogits()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.act(self.hidden(x.flatten(1)))))


class CorrelationProbe(nn.Module):
    """The correlation-probing network: C filters with receptive field kh×kw correlated with the
    periodic lattice at every position (wrapping around; the full field L×L sees the whole
    lattice from every origin) → tanh → average over the positions (translation invariance) →
    Linear(C → 1) = the bottleneck Q(S) → w·Q + b → [0, w·Q + b]. x [N, 1, L, L] → logits
    [N, 2]; :meth:`bottleneck` gives Q [N].

    The correlation runs as an FFT product (the kh×kw kernel zero-padded to L×L), so every field
    costs O(L² log L) per filter. A 1×1 field can only compute a + b·m after averaging (any
    function of one ±1 spin is affine in it), so on sign-symmetric data it cannot beat a constant
    guess; a 1×2 field reaches the bond energy along the field; the full field anything
    translation-invariant, |m| included. P = C (kh kw + 2) + 3."""

    def __init__(
        self, L: int, receptive_field: tuple[int, int], channels: int = 4, *, seed: int | None = None
    ):
        super().__init__()
        L = _check_L(L, "CorrelationProbe")
        kh, kw = (int(k) for k in receptive_field)
        if not (1 <= kh <= L and 1 <= kw <= L):
            raise ValueError(
                f"CorrelationProbe: receptive_field must lie in [1, {L}]², got {receptive_field}"
            )
        self.L, self.receptive_field = L, (kh, kw)
        with seeded(seed):
            # the default init of a Conv2d with this field (uniform, bound 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(kh * kw)
            self.weight = nn.Parameter(torch.empty(channels, kh, kw).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))
            self.q = nn.Linear(channels, 1)
            self.out = nn.Linear(1, 1)
        self.head = _TwoLogits()

    def correlations(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_{a<kh, b<kw} w_c[a, b] s[i + a, j + b] (indices mod L): [N, C, L, L]."""
        kh, kw = self.receptive_field
        kernel = nn.functional.pad(self.weight, (0, self.L - kw, 0, self.L - kh))
        spectrum = torch.fft.rfft2(x) * torch.fft.rfft2(kernel).conj().unsqueeze(0)
        return torch.fft.irfft2(spectrum, s=(self.L, self.L))

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """Q(S) [N]: the one number the decision is made from."""
        h = torch.tanh(self.correlations(x) + self.bias.view(1, -1, 1, 1))
        return self.q(h.mean(dim=(2, 3))).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.out(self.bottleneck(x).unsqueeze(1)))


class IsingAutoencoder(nn.Module):
    """Autoencoder with a one-number latent (Wetzel, PRE 2017). Encoder: z = Σ_i w_i s_i, one
    linear neuron without bias (so z(−S) = −z(S), as the Hamiltonian is even, and z is a
    statistic of the spins that the weights w [L²] make readable: uniform weights are the
    magnetisation). Decoder: Linear(1 → H) → tanh → Linear(H → L²) → logits of P(s_i = +1).

    Plain (``variational=False``): forward gives the reconstruction tanh(logits/2) = E[s_i]
    [N, L²] (train with MSE against the flattened spins). Variational: z is the posterior mean
    and a second linear neuron (with bias) gives log σ²; forward decodes the mean;
    :meth:`elbo_loss` is the negative ELBO per configuration (Bernoulli reconstruction + KL to
    N(0, 1)), sampling with the global RNG."""

    def __init__(self, L: int, hidden: int = 32, *, variational: bool = False, seed: int | None = None):
        super().__init__()
        L = _check_L(L, "IsingAutoencoder")
        self.L, self.variational = L, bool(variational)
        with seeded(seed):
            self.enc_mean = nn.Linear(L * L, 1, bias=False)
            self.enc_logvar = nn.Linear(L * L, 1) if variational else None
            self.dec_hidden = nn.Linear(1, hidden)
            self.dec_out = nn.Linear(hidden, L * L)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent z [N] (the mean for a VAE) of configurations [N, 1, L, L] or [N, L²]."""
        return self.enc_mean(x.flatten(1)).squeeze(1)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of P(s_i = +1) [N, L²] for latents z [N]."""
        return self.dec_out(torch.tanh(self.dec_hidden(z.unsqueeze(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(0.5 * self.decode_logits(self.encode(x)))

    def elbo_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the negative ELBO: Σ_i BCE(s_i | z) + KL(q(z|S) ‖ N(0, 1)),
        z = μ + σ ε (one sample). Only for ``variational=True``."""
        if self.enc_logvar is None:
            raise ValueError("IsingAutoencoder.elbo_loss: the model is not variational")
        flat = x.flatten(1)
        mu, logvar = self.enc_mean(flat).squeeze(1), self.enc_logvar(flat).squeeze(1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        target = 0.5 * (x.flatten(1) + 1.0)
        recon = nn.functional.binary_cross_entropy_with_logits(
            self.decode_logits(z), target, reduction="none"
        )
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)
        return (recon.sum(1) + kl).mean()

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Per-configuration mean squared error of the (mean) reconstruction [N]."""
        return (self.forward(x) - x.flatten(1)).square().mean(1)
