"""The parameters a method differentiates: choosing them, flattening θ, splitting it back,
counting, and detached working copies.

Order is always ``model.named_parameters()`` order (which lists a tensor shared between
modules once, under its first name), restricted to the chosen parameters.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def flat_parameters(model: nn.Module, params=None) -> tuple[list[str], list[torch.Tensor]]:
    """(names, tensors) of the parameters a method differentiates, in named_parameters() order.

    ``params`` may be None (all parameters that require grad), a list of names, or a list of
    parameter tensors of ``model``."""
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        if isinstance(params, (str, torch.Tensor)):
            params = [params]
        by_id = {id(p): n for n, p in named}
        known = dict(named)
        names = set()
        for item in params:
            if isinstance(item, str):
                if item not in known:
                    raise ValueError(
                        f"params: {item!r} is not a parameter of the model (its "
                        f"parameters include {list(known)[:8]})"
                    )
                names.add(item)
            elif isinstance(item, torch.Tensor) and id(item) in by_id:
                names.add(by_id[id(item)])
            else:
                raise TypeError(
                    "params: expected parameter names or parameter tensors of the "
                    f"model, got {type(item).__name__}"
                )
        chosen = [(n, p) for n, p in named if n in names]
    if not chosen:
        raise ValueError(
            "params: no parameters to differentiate (none requires grad, or the selection is empty)"
        )
    return [n for n, _ in chosen], [p for _, p in chosen]


def num_params(model: nn.Module, params=None) -> int:
    """P: how many scalars the chosen parameters hold (default: all that require grad)."""
    return sum(t.numel() for t in flat_parameters(model, params)[1])


def unflatten_params(
    row: torch.Tensor, names: Sequence[str], shapes: Iterable[Sequence[int]]
) -> dict[str, torch.Tensor]:
    """Split flat parameter vectors back into named tensors (views, no copy).

    row: [P] or [..., P] (e.g. a row of G, or G itself) → {name: [..., *shape]}."""
    shapes = [tuple(s) for s in shapes]
    sizes = [math.prod(s) for s in shapes]
    if row.shape[-1] != sum(sizes):
        raise ValueError(
            f"unflatten_params: row has {row.shape[-1]} entries, the parameters "
            f"{list(names)} have {sum(sizes)}"
        )
    lead = row.shape[:-1]
    return {
        n: piece.reshape(*lead, *s) for n, s, piece in zip(names, shapes, torch.split(row, sizes, dim=-1))
    }


def values_fingerprint(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 of the exact bytes (and dtypes, shapes) of ``tensors``: what a curvature object
    remembers of the parameters it was made at, to refuse being used after they changed."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def working_copy(t: torch.Tensor, dtype: torch.dtype, device=None) -> torch.Tensor:
    """A detached copy of ``t`` for functional evaluation: floating tensors at ``dtype``, integer
    and boolean ones (labels, indices, BatchNorm's batch counter) unchanged in dtype."""
    t = t.detach()
    if t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    return t.to(device) if device is not None else t


def functional_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """{name: working copy} of every parameter and buffer of ``model`` (for functional_call)."""
    state = {k: working_copy(p, dtype) for k, p in model.named_parameters()}
    state.update({k: working_copy(b, dtype) for k, b in model.named_buffers()})
    return state
