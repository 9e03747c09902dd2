"""Loading the compiled core hessext._C, and asking what it provides.

Three environment variables steer it:

- ``HESSEXT_DISABLE_EXT=1``: do not load the compiled core; every op runs its pure-torch
  reference (used by the fallback-parity tests).
- ``HESSEXT_REQUIRE_EXT=1``: a missing compiled core is an ImportError instead of a warning
  (CI sets it, so a broken build can never pass as the fallback).

A compiled core that exists but fails to load, or that was built against another torch than the
one running, is always an ImportError: a stale build must never fall back silently.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings

import torch

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _load():
    disabled, required = _flag("HESSEXT_DISABLE_EXT"), _flag("HESSEXT_REQUIRE_EXT")
    if disabled and required:
        raise ImportError("hessext: HESSEXT_DISABLE_EXT=1 and HESSEXT_REQUIRE_EXT=1 contradict each other")
    if disabled:
        return None, "disabled by HESSEXT_DISABLE_EXT=1"
    if importlib.util.find_spec("hessext._C") is None:
        message = (
            "hessext: the compiled core hessext._C is not built; every op runs its pure-torch "
            "reference (same answers, slower). Install with `pip install --no-build-isolation .` "
            "to build it, or set HESSEXT_DISABLE_EXT=1 to silence this warning."
        )
        if required:
            raise ImportError(message + " (HESSEXT_REQUIRE_EXT=1 makes this an error)")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return None, "not built"
    try:
        from hessext import _C
    except ImportError as err:  # e.g. undefined symbols: built against another torch
        raise ImportError(
            f"hessext: the compiled core exists but does not load with torch {torch.__version__}: "
            f"{err}. Rebuild it against this torch: pip install --no-build-isolation --force-reinstall ."
        ) from err
    if _C.torch_version != torch.__version__:
        raise ImportError(
            f"hessext: the compiled core was built against torch {_C.torch_version} but torch "
            f"{torch.__version__} is running. Rebuild: pip install --no-build-isolation --force-reinstall ."
        )
    return _C, "loaded"


_C, status = _load()
loaded = _C is not None


@functools.cache
def has_kernel(op: str, device_type: str) -> bool:
    """Whether hessext::<op> has a compiled kernel for this device type ('cpu', 'cuda').

    Cached: registrations are static once the core is loaded, and a plain Python lookup lets
    torch.compile trace through the hessext.ops wrappers into one graph."""
    if not loaded:
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(f"hessext::{op}", key)


def registered_ops() -> list[str]:
    """Names of the ops in the hessext library (empty when the compiled core is not loaded)."""
    if not loaded:
        return []
    return sorted(
        name.split("::", 1)[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("hessext::")
    )
