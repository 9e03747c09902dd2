"""The decision-boundary study's models (Sabanayagam et al. 2023): ReLU MLPs and the 3-class
MNIST CNN."""

from __future__ import annotations

import torch
from torch import nn

from hessext.models.common import seeded

__all__ = ["mlp", "MNISTCNN3"]


def mlp(*sizes: int, seed: int | None = None, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Fully connected network, e.g. mlp(2, 100, 100, 3): Linear(2,100) → ReLU →
    Linear(100,100) → ReLU → Linear(100,3) (P = 10,703). x [N, sizes[0]] → [N, sizes[-1]].
    ``activation``: the module class between the layers (a fresh instance at each place), ReLU
    by default (the decision-boundary study's), e.g. nn.SiLU for smooth regression nets."""
    if len(sizes) < 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ValueError(f"mlp: need at least two positive int sizes, got {sizes}")
    layers: list[nn.Module] = []
    with seeded(seed):
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if k > 0:
                layers.append(activation())
            layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class MNISTCNN3(nn.Module):
    """The decision-boundary study's MNIST CNN for 3 classes (P = 7,203):
    Conv2d(1,16,3) → ReLU → MaxPool2 → Conv2d(16,32,3) → ReLU → MaxPool2 → Flatten →
    Linear(800, 3). x [N, 1, 28, 28] → logits [N, 3] (28 → 26 → 13 → 11 → 5; 32·5·5 = 800)."""

    def __init__(self, n_classes: int = 3, *, seed: int | None = None):
        super().__init__()
        with seeded(seed):
            self.net = nn.Sequential(
                nn.Conv2d(1, 16, 3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(800, n_classes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def layer_chain(self) -> list[nn.Module]:
        """The modules forward applies, in order (hessext/curvature/chain.py)."""
        return [self.net]
