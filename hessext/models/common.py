"""What every study model shares: seeded initialisation that leaves the caller's RNG alone, and
a dropout layer that draws its mask faster on the CPU."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["seeded", "UniformDropout"]


@contextmanager
def seeded(seed: int | None):
    """Run the body with the global CPU RNG seeded, restoring the caller's RNG state after."""
    if seed is None:
        yield
        return
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class UniformDropout(nn.Dropout):
    """nn.Dropout whose training-mode mask is drawn as ``torch.rand_like(x) >= p``
    (times 1/(1 - p)).

    The same layer in distribution (each element kept with probability 1 - p and scaled by
    1/(1 - p); the identity in eval mode), with a different random stream: on the CPU,
    torch's dropout draws its Bernoulli mask 3-5x slower than a uniform draw and a comparison
    (measured on [64, 9, 26, 26]: 24 ms vs 5 ms), which made dropout a third of the SSH CNN's
    training step. It is an nn.Dropout, so everything that recognises dropout still does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        # in place on the fresh uniform draw: 1/(1 - p) where kept, 0 elsewhere, in x's dtype
        scale = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * scale
