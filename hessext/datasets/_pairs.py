"""What the pair generators of the Siamese-network study share: negatives made by permuting the
positives' partners."""

from __future__ import annotations

import torch


def negatives_by_permutation(b: torch.Tensor, gen: torch.Generator):
    """(b', same): the partners ``b`` [N, ...] with those of a random half (⌊N/2⌋) of the pairs
    replaced by the partner of another pair (a random derangement), and the bool [N] that
    marks the pairs left as they were. The marginals of b' are those of b, so only the
    relation between the members of a pair tells positives from negatives."""
    n = len(b)
    same = torch.ones(n, dtype=torch.bool)
    if n < 2:
        return b.clone(), same
    negative = torch.randperm(n, generator=gen)[: n // 2]
    same[negative] = False
    # a derangement of all N pairs: a random cyclic order, each pair takes its successor's b
    cycle = torch.randperm(n, generator=gen)
    other = torch.empty(n, dtype=torch.long)
    other[cycle] = cycle.roll(-1)
    out = b.clone()
    out[negative] = b[other[negative]]
    return out, same
