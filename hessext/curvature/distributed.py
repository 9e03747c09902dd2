"""Data parallelism over torch.distributed, as every curvature pass and scoring loop uses it:
which process group (if any) a call runs in, which mini-batches each rank takes, and the sums.

A call with ``distributed=None`` joins an initialised default process group (False: never;
True: require one). Rank r takes every world-th mini-batch starting at r (rows are split first
when there are fewer mini-batches than ranks), so the ranks together see every example once.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from hessext.curvature.problem import Problem, build_problem, split_rows

__all__ = ["context", "shard", "all_reduce", "broadcast", "local_problem"]


def context(distributed, who: str) -> tuple[int, int]:
    """(rank, world) when running data-parallel over torch.distributed, else (0, 1)."""
    if distributed is False or not (dist.is_available() and dist.is_initialized()):
        if distributed is True:
            raise ValueError(f"{who}: distributed=True but torch.distributed is not initialised")
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def shard(batches, rank: int, world: int):
    """This rank's share of the mini-batches (all of them when world = 1)."""
    if world == 1:
        return batches
    if len(batches) < world:  # too few mini-batches to share: split their rows
        rows = max(1, math.ceil(max(x.shape[0] for x, _ in batches) / world))
        batches = split_rows(batches, rows)
    return batches[rank::world]


def all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum ``t`` over the ranks in place (no-op for one process); returns it."""
    if world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast(t: torch.Tensor, world: int, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s ``t`` on every rank, in place (so that every rank uses bit-identical
    eigenvectors: LAPACK on different thread counts may flip signs); returns it."""
    if world > 1:
        dist.broadcast(t, src=src)
    return t


def local_problem(model, loss_fn, data, *, params, regularizer, dtype, batch_size, distributed, who):
    """(Problem, this rank's mini-batches (split to at most ``batch_size`` examples), rank,
    world) for a curvature pass at ``dtype`` (None: the model's). Call inside preserved(model)."""
    if batch_size is not None and not (
        isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1
    ):
        raise ValueError(f"{who}: batch_size must be a positive integer or None, got {batch_size!r}")
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    prob: Problem = build_problem(
        model, loss_fn, data, params=params, regularizer=regularizer, dtype=dtype, who=who
    )
    batches = prob.batches if batch_size is None else split_rows(prob.batches, batch_size)
    rank, world = context(distributed, who)
    return prob, shard(batches, rank, world), rank, world
