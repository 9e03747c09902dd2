"""The disordered-SSH phase classifier (Cybiński et al. 2024), P = 1,024, and its training recipe."""

from __future__ import annotations

import torch
from torch import nn

from hessext.curvature.chain import GlobalMean
from hessext.models.common import UniformDropout, seeded
from hessext.training import PlateauStop, Recipe

__all__ = ["SSHCNN", "SSH_RECIPE"]

SSH_RECIPE = Recipe(
    optimizer="sgd",
    lr=1e-4,
    momentum=0.9,
    weight_decay=0.1,
    batch_size=64,
    max_epochs=1000,
    loss="ce",
    early_stopping=PlateauStop(patience=10, tolerance=0.005, warmup=100),
)
"""The paper's recipe for its 100 CNNs (their parameters.txt): SGD, lr 1e-4, momentum 0.9,
weight decay 0.1, batch 64, at most 1000 epochs, early stopping on a validation-loss plateau
(patience 10, tolerance 0.005, warmup 100 epochs), trained on the perturbative data
(hessext.datasets.ssh.study_splits). Where hessext differs (docs/ssh-study.md): cross-entropy
on the logits instead of BCELoss on a softmax output — for two classes BCE(softmax(f), onehot)
averaged over the two outputs equals the cross-entropy exactly, value and gradient, so the
optimisation is the same, without the softmax in the model and BCE's log clamp; the training
order is reshuffled every epoch from the model's seed (the original shuffled once, seed 2137);
the validation loss is the exact mean over the set (the original divided a sum of batch means
by floor(N/64))."""


class SSHCNN(nn.Module):
    """The SSH phase classifier: three blocks Conv2d(no bias) → BatchNorm2d → LeakyReLU →
    Dropout(0.5) (hessext.models.common.UniformDropout: nn.Dropout with a faster mask) with 5, 7,
    9 channels (first conv kernel 4, stride 2, padding 2; the others
    kernel 3, padding 1), global average pooling, Linear(9 → 2).

    x [N, C, 50, 50] → logits [N, 2]; spatial size 50 → 26 → 26 → 26. The last block
    (``self.block3``) is the one CAM and grad-CAM look at. in_channels = C (1 for the images;
    ``levels`` for their thermometer encoding, hessext.datasets.ssh.thermometer); width
    multiplies every block's channels (the paper's thermometer network uses width = levels:
    5·levels, 7·levels, 9·levels channels). P = 1,024 for the defaults.
    """

    def __init__(
        self, *, seed: int | None = None, dropout: float = 0.5, in_channels: int = 1, width: int = 1
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SSHCNN: {name} must be a positive int, got {value!r}")

        def block(c_in, c_out, **conv):
            return nn.Sequential(
                nn.Conv2d(c_in, c_out, bias=False, **conv),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(),
                UniformDropout(dropout),
            )

        with seeded(seed):
            self.block1 = block(in_channels, 5 * width, kernel_size=4, stride=2, padding=2)
            self.block2 = block(5 * width, 7 * width, kernel_size=3, padding=1)
            self.block3 = block(7 * width, 9 * width, kernel_size=3, padding=1)
            self.fc = nn.Linear(9 * width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(x)))
        return self.fc(h.mean(dim=(2, 3)))

    def layer_chain(self) -> list[nn.Module]:
        """The modules forward applies in eval mode, in order (hessext/curvature/chain.py): the
        curvature paths run the model in eval mode, where dropout is the identity, so the chain
        leaves the dropout layers out (they are UniformDropout, which the closed-form paths,
        checking exact module types, would not recognise). The paths check the chain against
        the model's own output before they use it."""
        body = [
            m
            for block in (self.block1, self.block2, self.block3)
            for m in block
            if not isinstance(m, nn.Dropout)
        ]
        return [*body, GlobalMean(), self.fc]
