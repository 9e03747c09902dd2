"""What every study model shares: seeded initialisation that leaves the caller's RNG alone."""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["seeded"]


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
