"""The user's model is theirs: every public call runs inside ``preserved(model)``, which puts
back exactly what it found — parameter values and requires_grad flags, .grad tensors, forward
and backward hooks, and the train/eval mode of every submodule — also when the call raises."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
    "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks",
)


@contextlib.contextmanager
def preserved(model: nn.Module, *, eval_mode: bool = True):
    """Run the body with ``model`` in eval mode (dropout off, BatchNorm on its running
    statistics — per-example quantities need examples that do not interact), then restore it.

    Parameter values are snapshotted by reference and compared cheaply: the body must not write
    them in place (our code never does); .grad and the hooks are restored to the same objects."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    requires = [p.requires_grad for p in params]
    versions = [p._version for p in params]
    hooks = [{name: dict(getattr(m, name)) for name in _HOOK_DICTS if hasattr(m, name)}
             for m in modules]
    try:
        if eval_mode:
            model.eval()
        yield model
    finally:
        for m, mode, saved in zip(modules, modes, hooks):
            m.training = mode
            for name, entries in saved.items():
                current = getattr(m, name)
                current.clear()
                current.update(entries)
        for p, g, r in zip(params, grads, requires):
            p.grad = g
            p.requires_grad_(r)
        changed = [i for i, (p, v) in enumerate(zip(params, versions)) if p._version != v]
        if changed:  # a bug in hessext, never the user's doing: say so loudly
            raise RuntimeError(f"hessext internal error: parameters {changed} were modified in place")


def flat_parameters(model: nn.Module, params=None) -> tuple[list[str], list[torch.Tensor]]:
    """(names, tensors) of the parameters a method differentiates, in named_parameters() order.

    ``params`` may be None (all parameters that require grad), a list of names, or a list of
    parameter tensors of ``model``."""
    named = [(n, p) for n, p in model.named_parameters()]
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        params = list(params)
        by_id = {id(p): n for n, p in named}
        names = set()
        for item in params:
            if isinstance(item, str):
                if item not in dict(named):
                    raise ValueError(f"params: {item!r} is not a parameter of the model")
                names.add(item)
            elif isinstance(item, torch.Tensor) and id(item) in by_id:
                names.add(by_id[id(item)])
            else:
                raise TypeError("params: expected parameter names or parameter tensors of the model")
        chosen = [(n, p) for n, p in named if n in names]
    if not chosen:
        raise ValueError("params: no parameters to differentiate")
    return [n for n, _ in chosen], [p for _, p in chosen]
