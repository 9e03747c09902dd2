"""The Hessian-based toolbox's 1-D CNN (Dawid et al. 2022), LL vs CDW-I, P = 740."""

from __future__ import annotations

import torch
from torch import nn

from hessext.models.common import seeded

__all__ = ["Conv1DToolbox"]


class Conv1DToolbox(nn.Module):
    """The toolbox's 1-D CNN for LL vs CDW-I (P = 740); state-dict keys layer1.0, layer2.0,
    layer3.0, fc1 as in the published checkpoint.

    x [N, 1, 924] (min-max normalised amplitudes) → logits [N, 2]. Shapes along the way:
    924 -conv15,pad1-> 912 -maxpool4-> 228 -conv5-> 224 -maxpool4-> 56 -conv2,pad1-> 57
    -avgpool4-> 14; 10 channels × 14 = 140 features.
    """

    def __init__(self, *, seed: int | None = None):
        super().__init__()
        with seeded(seed):
            self.layer1 = nn.Sequential(nn.Conv1d(1, 5, 15, padding=1), nn.MaxPool1d(4), nn.ReLU())
            self.layer2 = nn.Sequential(nn.Conv1d(5, 8, 5), nn.MaxPool1d(4), nn.ReLU())
            self.layer3 = nn.Sequential(nn.Conv1d(8, 10, 2, padding=1), nn.AvgPool1d(4), nn.ReLU())
            self.dropout = nn.Dropout(0.5)
            self.fc1 = nn.Linear(140, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer3(self.layer2(self.layer1(x)))
        return self.fc1(self.dropout(h.flatten(1)))

    def layer_chain(self) -> list[nn.Module]:
        """The modules forward applies, in order (hessext/curvature/chain.py)."""
        return [self.layer1, self.layer2, self.layer3, nn.Flatten(), self.dropout, self.fc1]
