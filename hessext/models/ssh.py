"""The disordered-SSH phase classifier (Cybiński et al. 2024), P = 1,024."""

from __future__ import annotations

import torch
from torch import nn

from hessext.curvature.chain import GlobalMean
from hessext.models.common import seeded

__all__ = ["SSHCNN"]


class SSHCNN(nn.Module):
    """The SSH phase classifier: three blocks Conv2d(no bias) → BatchNorm2d → LeakyReLU →
    Dropout(0.5) with 5, 7, 9 channels (first conv kernel 4, stride 2, padding 2; the others
    kernel 3, padding 1), global average pooling, Linear(9 → 2).

    x [N, 1, 50, 50] → logits [N, 2]; spatial size 50 → 26 → 26 → 26. The last block
    (``self.block3``) is the one CAM and grad-CAM look at.
    """

    def __init__(self, *, seed: int | None = None, dropout: float = 0.5):
        super().__init__()

        def block(c_in, c_out, **conv):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, bias=False, **conv),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(),
                nn.Dropout(dropout),
            )

        with seeded(seed):
            self.block1 = block(1, 5, kernel_size=4, stride=2, padding=2)
            self.block2 = block(5, 7, kernel_size=3, padding=1)
            self.block3 = block(7, 9, kernel_size=3, padding=1)
            self.fc = nn.Linear(9, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(x)))
        return self.fc(h.mean(dim=(2, 3)))

    def layer_chain(self) -> list[nn.Module]:
        """The modules forward applies, in order (hessext/curvature/chain.py)."""
        return [self.block1, self.block2, self.block3, GlobalMean(), self.fc]
