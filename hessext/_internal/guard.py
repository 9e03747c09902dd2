"""The user's model is theirs.

Every public call runs inside ``preserved(model)``, which puts back exactly what it found —
the parameter and buffer objects of every module, their values and requires_grad flags, .grad
tensors, forward and backward hooks, and the train/eval mode of every submodule — also when the
call raises. It also runs the body with gradients enabled: callers very often hold
``torch.no_grad()`` around analysis code, and every method here differentiates.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules import module as module_globals
from torch.nn.modules.batchnorm import _BatchNorm

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


F = TypeVar("F", bound=Callable)


def grad_mode(fn: F) -> F:
    """Run a public entry point with gradients enabled and inference mode off, whatever the
    caller holds (torch.no_grad() and torch.inference_mode() are common around analysis code):
    everything here differentiates, and tensors made under inference mode could not be written
    or saved for backward later in the same call. Its results are ordinary tensors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def check_model(model, who: str, *, examples_may_interact: bool = False) -> nn.Module:
    """Refuse what no method can work on: a non-Module (e.g. a plain function), parameters or
    buffers without data (the meta device), backward hooks, and — unless the caller's result
    is defined for them (the Hessian of the mean loss over the mini-batches as given) — modules
    through which the examples of a batch interact (``batch_statistics``)."""
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
    _check_no_backward_hooks(model, who)
    why = batch_statistics(model)
    if why is not None and not examples_may_interact:
        raise ValueError(
            f"{who}: {why}, so even in eval mode it normalises every batch by that batch's own mean "
            "and variance: the examples of a batch interact, and per-example gradients and "
            "curvatures are not defined by the model alone. Give it running statistics "
            "(track_running_stats=True, then train or set running_mean/running_var) or use a "
            "per-example normalisation (LayerNorm, GroupNorm)"
        )
    return model


def _check_no_backward_hooks(model: nn.Module, who: str) -> None:
    """Backward hooks are not part of the function the forward computes, and torch.func cannot
    run them (functorch refuses the autograd.Function they install): hessext differentiates the
    function itself, so it refuses rather than silently bypassing a hook that rewrites
    gradients."""
    where = None
    for name, m in model.named_modules():
        if m._backward_hooks or m._backward_pre_hooks:
            where = f"module {name or '(the model itself)'!r} ({type(m).__name__}) has a backward hook"
            break
    if where is None and (module_globals._global_backward_hooks or module_globals._global_backward_pre_hooks):
        where = "a global module backward hook is registered"
    if where is not None:
        raise ValueError(
            f"{who}: {where}. hessext differentiates the function the model's forward computes; "
            "backward hooks are not part of it (and torch.func cannot run them), so the result "
            "would silently differ from what the hook makes autograd return. Remove the hook for "
            "this call (handle.remove() on what register_full_backward_hook returned) and "
            "register it again afterwards"
        )


def batch_statistics(model: nn.Module) -> str | None:
    """Which module makes the examples of a batch interact in eval mode (every method here runs
    the model in eval mode): a BatchNorm without running statistics normalises by the batch's
    own statistics. None when there is none."""
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.running_mean is None and m.running_var is None:
            return (
                f"module {name!r} ({type(m).__name__}) has no running statistics (track_running_stats=False)"
            )
    return None


@contextlib.contextmanager
def preserved(model: nn.Module, *, eval_mode: bool = True):
    """Run the body with ``model`` in eval mode (dropout off, BatchNorm on its running
    statistics — per-example quantities need examples that do not interact) and gradients
    enabled, then restore it.

    Parameter values are snapshotted by reference and compared cheaply: the body must not write
    them in place (our code never does); .grad, the hooks and the parameter and buffer objects
    are restored to the same objects."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"hessext: model must be a torch.nn.Module, got {type(model).__name__} "
            "(wrap a function of x in an nn.Module whose forward calls it)"
        )
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
