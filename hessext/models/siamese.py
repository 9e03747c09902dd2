"""The pair networks of the invariants study (Wetzel et al. 2020 and 2022;
docs/wetzel-invariants.md): a Siamese network with a small latent, and a twin regression net.

- :class:`SiameseNet`: one encoder z = g(x) applied to both members of a pair (shared
  weights), and a head on their distance, logit = b − e^s ‖g(a) − g(b)‖², so that a pair is
  called "same" exactly when the latents are closer than √(b e^{−s}). With a one- or
  two-neuron latent, whatever tells positives from negatives must pass through z: an invariant
  of the transformation that relates the positives.
- :class:`TwinNet`: F(x₁, x₂) ≈ y₁ − y₂, one MLP on the concatenation [x₁, x₂]
  (hessext.interpret.twin turns it into predictions and uncertainties).

Both use SiLU activations (smooth, so the latent is a smooth function of the input).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hessext.models.boundary import mlp
from hessext.models.common import seeded

__all__ = ["SiameseNet", "TwinNet"]


def _widths(hidden: Sequence[int], who: str) -> tuple[int, ...]:
    widths = tuple(hidden)
    if not widths or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"{who}: hidden must be a non-empty sequence of positive ints, got {hidden!r}")
    return widths


def _positive(value, name: str, who: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return value


class SiameseNet(nn.Module):
    """Siamese pair classifier: a, b [N, in_features] → logits [N] of "same".

    encoder: mlp(in_features, *hidden, latent) with SiLU; head: logit = bias − exp(log_scale)
    ‖z_a − z_b‖² (two parameters, initialised to bias 2, log_scale 0)."""

    def __init__(
        self, in_features: int, latent: int = 1, hidden: Sequence[int] = (64, 64), *, seed: int | None = None
    ):
        super().__init__()
        _positive(in_features, "in_features", "SiameseNet")
        _positive(latent, "latent", "SiameseNet")
        widths = _widths(hidden, "SiameseNet")
        with seeded(seed):
            self.encoder = mlp(in_features, *widths, latent, activation=nn.SiLU)
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.full((), 2.0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent z [N, latent] of states x [N, in_features]."""
        return self.encoder(x)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = (self.encoder(a) - self.encoder(b)).pow(2).sum(1)
        return self.bias - self.log_scale.exp() * d2


class TwinNet(nn.Module):
    """Twin regression network: x1, x2 [N, in_features] → F(x1, x2) [N] ≈ y1 − y2.

    One mlp(2·in_features, *hidden, 1) with SiLU on the concatenation [x1, x2]; antisymmetry is
    not built in (the two-way anchor average of hessext.interpret.twin_predict uses both
    orders)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (64, 64), *, seed: int | None = None):
        super().__init__()
        _positive(in_features, "in_features", "TwinNet")
        widths = _widths(hidden, "TwinNet")
        with seeded(seed):
            self.net = mlp(2 * in_features, *widths, 1, activation=nn.SiLU)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x1, x2], dim=1)).squeeze(1)
