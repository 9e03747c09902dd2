"""A function of one example, applied to every example: torch.func.vmap where torch.func can
batch the model, one example at a time where it cannot.

vmap needs a batching rule for every operator the model runs, and some models have none:
nn.RNN / GRU / LSTM (no rule for aten::lstm, and their hidden state is created unbatched), and
torch bugs such as the jacobian of nn.PReLU under vmap (a shape error in prelu's backward, torch
2.13). For these the same function runs example by example and the results are stacked: the
same numbers, at the cost of a Python loop. Which of the two ran is reported (``Batched.how``),
so that a result can say how it was computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_leaves, tree_map

__all__ = ["VMAP", "Batched", "over_examples"]

VMAP = "torch.func.vmap over examples"


@dataclass
class Batched:
    """How ``over_examples`` runs a function: vmapped, or (once vmap failed on this model) one
    example at a time. Keep one per model and call site so that vmap is tried only once."""

    how: str = VMAP

    @property
    def looping(self) -> bool:
        return self.how != VMAP


def over_examples(
    fn: Callable,
    in_dims: Sequence[int | None],
    *args,
    state: Batched | None = None,
    chunk_size: int | None = None,
):
    """``torch.func.vmap(fn, in_dims)(*args)``, or the same results from a loop over the
    examples (dim 0 of every tensor of the arguments whose in_dim is 0) stacked along dim 0 when vmap cannot
    batch the model. ``state`` (a Batched) records which ran and skips vmap after a failure."""
    state = state if state is not None else Batched()
    if not state.looping:
        try:
            return torch.func.vmap(fn, in_dims=tuple(in_dims), chunk_size=chunk_size)(*args)
        except (RuntimeError, NotImplementedError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            state.how = f"one example at a time (torch.func.vmap cannot batch this model: {first[:160]})"
    n = next(tree_leaves(a)[0].shape[0] for a, d in zip(args, in_dims) if d is not None)
    results = [
        fn(*[a if d is None else tree_map(lambda t: t[i], a) for a, d in zip(args, in_dims)])
        for i in range(n)
    ]
    return tree_map(lambda *parts: torch.stack(parts), results[0], *results[1:])
