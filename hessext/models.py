"""The architectures of the studies hessext reproduces.

Each factory takes an optional ``seed``: given one, the parameters are initialised from it
(without touching the caller's global random state), so that a model, its training
(:func:`hessext.training.train`) and hence its Hessian are reproducible from seeds alone.

| model | study | input | parameters |
|---|---|---|---|
| Conv1DToolbox | LL/CDW toolbox (Dawid et al. 2022) | [N, 1, 924] | 740 |
| SSHCNN | disordered SSH (Cybiński et al. 2024) | [N, 1, 50, 50] | 1,024 |
| mlp(2, 100, 100, C) | decision boundary (Sabanayagam et al. 2023) | [N, 2] | 10,703 for C = 3 |
| MNISTCNN3 | decision boundary, 3-class MNIST | [N, 1, 28, 28] | 7,203 |
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["Conv1DToolbox", "SSHCNN", "mlp", "MNISTCNN3", "num_parameters"]


def num_parameters(model: nn.Module) -> int:
    """P, the number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def _seeded(seed: int | None):
    """Run the body with the global CPU RNG seeded, restoring the caller's RNG state after."""
    if seed is None:
        yield
        return
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Conv1DToolbox(nn.Module):
    """The toolbox's 1-D CNN for LL vs CDW-I (P = 740); state-dict keys layer1.0, layer2.0,
    layer3.0, fc1 as in the published checkpoint.

    x [N, 1, 924] (min-max normalised amplitudes) → logits [N, 2]. Shapes along the way:
    924 -conv15,pad1-> 912 -maxpool4-> 228 -conv5-> 224 -maxpool4-> 56 -conv2,pad1-> 57
    -avgpool4-> 14; 10 channels × 14 = 140 features.
    """

    def __init__(self, *, seed: int | None = None):
        super().__init__()
        with _seeded(seed):
            self.layer1 = nn.Sequential(nn.Conv1d(1, 5, 15, padding=1), nn.MaxPool1d(4), nn.ReLU())
            self.layer2 = nn.Sequential(nn.Conv1d(5, 8, 5), nn.MaxPool1d(4), nn.ReLU())
            self.layer3 = nn.Sequential(nn.Conv1d(8, 10, 2, padding=1), nn.AvgPool1d(4), nn.ReLU())
            self.dropout = nn.Dropout(0.5)
            self.fc1 = nn.Linear(140, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer3(self.layer2(self.layer1(x)))
        return self.fc1(self.dropout(h.flatten(1)))


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

        with _seeded(seed):
            self.block1 = block(1, 5, kernel_size=4, stride=2, padding=2)
            self.block2 = block(5, 7, kernel_size=3, padding=1)
            self.block3 = block(7, 9, kernel_size=3, padding=1)
            self.fc = nn.Linear(9, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(x)))
        return self.fc(h.mean(dim=(2, 3)))


def mlp(*sizes: int, seed: int | None = None) -> nn.Sequential:
    """Fully connected ReLU network, e.g. mlp(2, 100, 100, 3): Linear(2,100) → ReLU →
    Linear(100,100) → ReLU → Linear(100,3) (P = 10,703). x [N, sizes[0]] → [N, sizes[-1]]."""
    if len(sizes) < 2 or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
        raise ValueError(f"mlp: need at least two positive int sizes, got {sizes}")
    layers: list[nn.Module] = []
    with _seeded(seed):
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if k > 0:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class MNISTCNN3(nn.Module):
    """The decision-boundary study's MNIST CNN for 3 classes (P = 7,203):
    Conv2d(1,16,3) → ReLU → MaxPool2 → Conv2d(16,32,3) → ReLU → MaxPool2 → Flatten →
    Linear(800, 3). x [N, 1, 28, 28] → logits [N, 3] (28 → 26 → 13 → 11 → 5; 32·5·5 = 800)."""

    def __init__(self, n_classes: int = 3, *, seed: int | None = None):
        super().__init__()
        with _seeded(seed):
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
