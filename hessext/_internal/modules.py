"""When a module computes exactly what its class's closed form assumes: the one rule of every
fast path.

The fast paths (the native per-sample kernels of hessext/per_sample/capture.py, the closed-form
curvature fillers of hessext/curvature/fillers/, FastForward's deferred ReLU) replace a module's
forward by the formula of its class. They may do so only where the forward IS that formula, so
a module qualifies only when

- its type is exactly one of the stock classes (a subclass may override ``forward``: an
  ``nn.Linear`` that scales its output, an ``nn.Tanh`` subclass that is not elementwise);
- its instance does not replace ``forward`` (``m.forward = ...``);
- it has no forward, forward-pre, backward or backward-pre hooks (a forward hook may change the
  output, a pre-hook the input), and no global module hook is registered
  (``torch.nn.modules.module.register_module_forward_hook`` and friends apply to every module).

Everything else takes the general path, which runs the module as it is (torch.func), and the
reason is reported (``PerSampleGrads.fallback_reasons``, a Hessian's ``info['method']``).
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as module_globals

__all__ = ["global_hooks", "has_hooks", "not_stock"]

_MODULE_HOOKS = {
    "_forward_hooks": "a forward hook",
    "_forward_pre_hooks": "a forward pre-hook",
    "_backward_hooks": "a backward hook",
    "_backward_pre_hooks": "a backward pre-hook",
}
_GLOBAL_HOOKS = {
    "_global_forward_hooks": "a global forward hook",
    "_global_forward_pre_hooks": "a global forward pre-hook",
    "_global_backward_hooks": "a global backward hook",
    "_global_backward_pre_hooks": "a global backward pre-hook",
}


def global_hooks() -> str | None:
    """Which global module hook is registered (they run around every module's forward), or None."""
    for attr, what in _GLOBAL_HOOKS.items():
        if getattr(module_globals, attr, None):
            return f"{what} is registered (torch.nn.modules.module.register_module_*_hook)"
    return None


def has_hooks(m: nn.Module) -> str | None:
    """Which kind of hook ``m`` carries itself, or None."""
    for attr, what in _MODULE_HOOKS.items():
        if getattr(m, attr, None):
            return f"it has {what}"
    return None


def not_stock(m: nn.Module, types: tuple[type, ...]) -> str | None:
    """Why ``m``'s forward may differ from the stock forward of ``types`` (see the module
    docstring), or None when it is exactly that forward."""
    if type(m) not in types:
        if isinstance(m, types):
            return (
                f"it is a subclass ({type(m).__name__}) of nn.{_base(m, types)}, which may override forward"
            )
        return f"it is a {type(m).__name__}, not one of {', '.join(t.__name__ for t in types)}"
    if "forward" in vars(m):
        return "its forward is replaced on the instance"
    return has_hooks(m) or global_hooks()


def _base(m: nn.Module, types: tuple[type, ...]) -> str:
    return next(t.__name__ for t in types if isinstance(m, t))
