"""Faster max pooling inside hessext's own forward passes.

torch's CPU max_pool1d / max_pool2d spend ~3 ns per input element on the shapes of common CNNs
(13 ms of the toolbox CNN's forward pass for one 1000 x 5 x 912 pooling, more than its
convolution): every tool that runs the model pays it. For poolings whose window equals their
stride (MaxPool2d(2), MaxPool1d(4): no padding, dilation 1, floor mode, no indices asked for),
``hessext.ops.max_pool_forward`` gives the same values and the same gradient (the same chosen
element, NaN propagating) reading every input element once.

``StridedMaxPool()`` is a TorchFunctionMode: inside it, such calls of F.max_pool1d and
F.max_pool2d (also through nn.MaxPool1d/2d) run on that op and everything else runs as it was;
the user's model object is never edited. Used around the per-sample capture's forward pass.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from hessext import ops

_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
             "return_indices": False}
_SPATIAL_DIMS = {F.max_pool1d: 1, F.max_pool2d: 2}


def _ints(value, n):
    """An int or a sequence of ints as a tuple of n ints (None when it is neither)."""
    if isinstance(value, int):
        return (value,) * n
    try:
        t = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return t * n if len(t) == 1 else (t if len(t) == n else None)


def strided_max_pool(func, args, kwargs) -> torch.Tensor | None:
    """The output of ``func(*args, **kwargs)`` (F.max_pool1d or F.max_pool2d) computed by
    hessext's op, or None when the call is not a window == stride pooling that the op serves on
    this device (the caller then runs torch's)."""
    n = _SPATIAL_DIMS.get(func)
    if n is None or len(args) > len(_ARGS):
        return None
    call = dict(_DEFAULTS)
    call.update(zip(_ARGS, args))
    call.update(kwargs)
    x = call["input"]
    if (not isinstance(x, torch.Tensor) or x.dim() != n + 2 or call["ceil_mode"]
            or call["return_indices"] or not ops.uses_kernel("max_pool_forward", x)):
        return None
    kernel = _ints(call["kernel_size"], n)
    stride = kernel if call["stride"] is None or call["stride"] == [] else _ints(call["stride"], n)
    if (kernel is None or stride != kernel or _ints(call["padding"], n) != (0,) * n
            or _ints(call["dilation"], n) != (1,) * n or min(kernel) < 1
            or any(size < k for size, k in zip(x.shape[2:], kernel))):
        return None
    if n == 1:
        kernel = (1, *kernel)
    if kernel[0] * kernel[1] > 256:
        return None
    x4 = x.unsqueeze(2) if n == 1 else x
    y = ops.max_pool_forward(x4, kernel)[0]
    return y.squeeze(2) if n == 1 else y


class StridedMaxPool(torch.overrides.TorchFunctionMode):
    """Inside this mode, window == stride max pooling runs on hessext.ops.max_pool_forward."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SPATIAL_DIMS:
            y = strided_max_pool(func, args, kwargs)
            if y is not None:
                return y
        return func(*args, **kwargs)
