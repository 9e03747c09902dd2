"""The user's model is theirs.

Every public call runs inside ``preserved(model)``, which puts back exactly what it found —
the parameter and buffer objects of every module, their values and requires_grad flags, .grad
tensors, forward and backward hooks, and the train/eval mode of every submodule — also when the
call raises. It also runs the body with gradients enabled: callers very often hold
``torch.no_grad()`` around analysis code, and every method here differentiates.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


def check_model(model, who: str) -> nn.Module:
    """Refuse what no method can work on: a non-Module (e.g. a plain function), a model without
    floating parameters, and a model whose parameters have no data (the meta device)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{who}: model must be a torch.nn.Module, got {type(model).__name__} "
            "(wrap a function of x in an nn.Module whose forward calls it)"
        )
    for name, p in model.named_parameters():
        if p.is_meta:
            raise ValueError(
                f"{who}: parameter {name!r} is on the meta device (it has no "
                "values); load or initialise the model's weights first, e.g. "
                "model.to_empty(device='cpu') and load_state_dict"
            )
    for name, b in model.named_buffers():
        if b.is_meta:
            raise ValueError(f"{who}: buffer {name!r} is on the meta device (it has no values)")
    return model


@contextlib.contextmanager
def preserved(model: nn.Module, *, eval_mode: bool = True):
    """Run the body with ``model`` in eval mode (dropout off, BatchNorm on its running
    statistics — per-example quantities need examples that do not interact) and gradients
    enabled, then restore it.

    Parameter values are snapshotted by reference and compared cheaply: the body must not write
    them in place (our code never does); .grad, the hooks and the parameter and buffer objects
    are restored to the same objects."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    slots = [(dict(m._parameters), dict(m._buffers)) for m in modules]
    params = list(model.parameters())
    grads = [p.grad for p in params]
    requires = [p.requires_grad for p in params]
    versions = [p._version for p in params]
    hooks = [{name: dict(getattr(m, name)) for name in _HOOK_DICTS if hasattr(m, name)} for m in modules]
    try:
        if eval_mode:
            model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield model
    finally:
        for m, mode, saved, (own_params, own_buffers) in zip(modules, modes, hooks, slots):
            m.training = mode
            for name, entries in saved.items():
                current = getattr(m, name)
                current.clear()
                current.update(entries)
            for store, own in ((m._parameters, own_params), (m._buffers, own_buffers)):
                if store.keys() != own.keys() or any(store[k] is not v for k, v in own.items()):
                    store.clear()
                    store.update(own)  # type: ignore[arg-type]  # the very dict it held
        for p, g, r in zip(params, grads, requires):
            p.grad = g
            p.requires_grad_(r)
        changed = [i for i, (p, v) in enumerate(zip(params, versions)) if p._version != v]
        if changed:  # a bug in hessext, never the user's doing: say so loudly
            raise RuntimeError(f"hessext internal error: parameters {changed} were modified in place")
