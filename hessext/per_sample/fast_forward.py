"""Faster CPU layers inside hessext's own forward passes.

Two layers of common CNNs run far below the machine's rate in torch on CPU, and every tool that
runs the model pays for them: max pooling (~3 ns per input element: 13 ms for one 1000 x 5 x 912
pooling of the toolbox CNN) and convolutions with few terms per output such as a first layer on
one input channel (20 ms in oneDNN for the toolbox CNN's Conv1d(1, 5, 15) on 1000 x 924 inputs,
a fraction of a GFLOP). Inside ``FastForward()``, a TorchFunctionMode:

- F.max_pool1d / F.max_pool2d (also through nn.MaxPool1d/2d) whose window equals its stride
  (no padding, dilation 1, floor mode, no indices asked for) run on
  ``hessext.ops.max_pool_forward``: the same values and the same gradient (the same chosen
  element, NaN propagating), bit for bit;
- F.conv1d / F.conv2d with at most ``SMALL_CONV_TERMS`` terms per output (C/groups · kernel
  size) and output rows of at least ``LONG_CONV_ROWS`` run on ``hessext.ops.conv_forward``:
  the same convolution to float rounding (the terms are added in another order), whose backward
  asks torch's convolution_backward only for what
  the backward pass needs;
- every other call runs as it was. The user's model object is never edited.

Used around the per-sample capture's forward pass, where only the gradients of the layers'
outputs are asked for. CPU tensors only: on a GPU torch's cuDNN layers are the fast ones, and
hessext's CUDA kernels for these ops are one-thread-per-output bodies that have not yet run on
a GPU here.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._pytree import tree_map

from hessext import ops
from hessext._internal.modules import global_hooks, not_stock

# The direct kernel wins only for few terms per output over long rows; measured on the
# benchmark layers (2 vCPU, float32, direct vs torch's oneDNN convolution): Conv1d(1, 5, 15)
# on 1000 x 924: 5.3 vs 21.9 ms; but Conv2d(1, 16, 3) on 256 x 28 x 28 (rows of 26): 4.1 vs
# 0.9 ms, Conv1d(8, 10, 2) on 1000 x 55: 1.4 vs 0.35 ms, Conv1d(5, 8, 5) on 1000 x 228: 3.1 vs
# 1.3 ms. Below these bounds torch's convolution runs.
SMALL_CONV_TERMS = 16
LONG_CONV_ROWS = 512

_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_POOLS = {F.max_pool1d: 1, F.max_pool2d: 2}
_CONVS = {torch.conv1d: 1, torch.conv2d: 2}
_RELUS = {F.relu, torch.relu, torch.Tensor.relu}


def _ints(value, n):
    """An int or a sequence of ints as a tuple of n ints (None when it is neither)."""
    if isinstance(value, int):
        return (value,) * n
    try:
        t = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return t * n if len(t) == 1 else (t if len(t) == n else None)


def _bind(names, defaults, args, kwargs):
    if len(args) > len(names):
        return None
    call = dict(defaults)
    call.update(zip(names, args))
    call.update(kwargs)
    return call


def strided_max_pool(func, args, kwargs) -> torch.Tensor | None:
    """The output of ``func(*args, **kwargs)`` (F.max_pool1d or F.max_pool2d) computed by
    hessext's op, or None when the call is not a window == stride pooling of a CPU tensor that
    the op serves (the caller then runs torch's)."""
    n = _POOLS.get(func)
    call = _bind(_POOL_ARGS, _POOL_DEFAULTS, args, kwargs) if n is not None else None
    if n is None or call is None:
        return None
    x = call["input"]
    if (
        not isinstance(x, torch.Tensor)
        or x.device.type != "cpu"
        or x.dim() != n + 2
        or call["ceil_mode"]
        or call["return_indices"]
        or not ops.uses_kernel("max_pool_forward", x)
    ):
        return None
    kernel = _ints(call["kernel_size"], n)
    stride = kernel if call["stride"] is None or call["stride"] == [] else _ints(call["stride"], n)
    if (
        kernel is None
        or stride != kernel
        or _ints(call["padding"], n) != (0,) * n
        or _ints(call["dilation"], n) != (1,) * n
        or min(kernel) < 1
        or any(size < k for size, k in zip(x.shape[2:], kernel))
    ):
        return None
    if n == 1:
        kernel = (1, *kernel)
    if kernel[0] * kernel[1] > 256:
        return None
    y = ops.max_pool_forward(x.unsqueeze(2) if n == 1 else x, kernel)[0]
    return y.squeeze(2) if n == 1 else y


def small_conv(func, args, kwargs) -> torch.Tensor | None:
    """The output of ``func(*args, **kwargs)`` (torch.conv1d or torch.conv2d, which F.conv1d/2d
    are) computed by hessext's direct convolution, or None when the call is not a batched,
    zero-padded convolution of CPU tensors with at most SMALL_CONV_TERMS terms per output and
    output rows of at least LONG_CONV_ROWS that the op serves."""
    n = _CONVS.get(func)
    call = _bind(_CONV_ARGS, _CONV_DEFAULTS, args, kwargs) if n is not None else None
    if n is None or call is None:
        return None
    x, w, b = call["input"], call["weight"], call["bias"]
    if (
        not isinstance(x, torch.Tensor)
        or not isinstance(w, torch.Tensor)
        or x.device.type != "cpu"
        or x.dim() != n + 2
        or w.dim() != n + 2
        or not (b is None or isinstance(b, torch.Tensor))
        or not isinstance(call["groups"], int)
    ):
        return None
    padding = call["padding"]
    padding = (0,) * n if padding == "valid" else _ints(padding, n)  # 'same': torch's
    stride, dilation = _ints(call["stride"], n), _ints(call["dilation"], n)
    if padding is None or stride is None or dilation is None:
        return None
    width = (x.shape[-1] + 2 * padding[-1] - dilation[-1] * (w.shape[-1] - 1) - 1) // stride[-1] + 1
    if w.shape[1:].numel() > SMALL_CONV_TERMS or width < LONG_CONV_ROWS:
        return None
    tensors = (x, w) if b is None else (x, w, b)
    if not ops.uses_kernel("conv_forward", *tensors):
        return None
    if n == 1:
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
    try:
        y = ops.conv_forward(x, w, b, stride, padding, dilation, call["groups"])
    except RuntimeError:  # shapes torch would reject too: let torch say so in its words
        return None
    return y.squeeze(2) if n == 1 else y


def relus_before_pools(model: nn.Module) -> dict[nn.Module, nn.Sequential]:
    """{ReLU module: its nn.Sequential} for the nn.ReLU modules (not in place, used once in the
    model) whose output that Sequential passes straight to an nn.MaxPool1d/2d, all three with
    their stock forward (exact types, no hooks, no global module hook, forward not replaced:
    hessext/_internal/modules.py): when the Sequential calls such a ReLU, nothing but that
    pooling sees its output, so FastForward(model) may apply the ReLU after it."""
    if global_hooks() is not None:
        return {}
    found: dict[nn.Module, nn.Sequential] = {}
    for seq in model.modules():
        # a subclass may route outputs its own way
        if not isinstance(seq, nn.Sequential) or not_stock(seq, (nn.Sequential,)) is not None:
            continue
        children = list(seq)
        for relu, pool in zip(children, children[1:]):
            if (
                not_stock(relu, (nn.ReLU,)) is None
                and not relu.inplace
                and not_stock(pool, (nn.MaxPool1d, nn.MaxPool2d)) is None
            ):
                found[relu] = seq
    if found:  # only ReLUs used once in the model (the walk counts every use)
        uses: dict[int, int] = {}
        for _, m in model.named_modules(remove_duplicate=False):
            uses[id(m)] = uses.get(id(m), 0) + 1
        found = {relu: seq for relu, seq in found.items() if uses[id(relu)] == 1}
    return found


class FastForward(torch.overrides.TorchFunctionMode):
    """Inside this mode, window == stride max pooling and small convolutions on CPU tensors run
    on hessext's ops; everything else runs as it was.

    A pooling of the output of the ReLU just before it is computed as relu(pool(x)) instead of
    pool(relu(x)): ReLU is monotone, so the values are the same (up to the sign of a zero) and
    so is the gradient w.r.t. x (it reaches each window's first maximum of x when that maximum
    is positive, in both orders, and is zero otherwise), but the ReLU runs on the pooled
    tensor, a window's size smaller, and x's gradient is written once, by the pooling's
    backward. Two ways:
    - a ReLU module of ``relus_before_pools(model)`` (given model=), when its own Sequential
      calls it, returns its input unchanged, and the pooling that receives it next applies the
      ReLU to its result. Forward pre-hooks (removed on exit) tell the mode which F.relu call
      that is: on the ReLU modules, and on their Sequentials, whose running calls the mode
      keeps (a hook after each call pops it). Should any other function receive the
      unrectified tensor first, it gets the rectified one;
    - any other ReLU whose output is pooled next, unchanged, is computed as usual and its
      result left unused: the pooling reads the ReLU's input (its output is discarded with
      its graph node)."""

    def __init__(self, model: nn.Module | None = None):
        super().__init__()
        self._relu = None  # (weak reference to the last ReLU output, its version, input, version)
        self._deferrable = relus_before_pools(model) if model is not None else {}
        self._handles: list = []
        self._running: list[nn.Module] = []  # the deferrable ReLUs' Sequentials now running, innermost last
        self._defer = None  # the input of a deferrable ReLU module about to run
        self._pending = None  # a deferrable ReLU's input, returned as its output

    def __enter__(self):
        for seq in {id(seq): seq for seq in self._deferrable.values()}.values():
            self._handles += [seq.register_forward_pre_hook(self._push), seq.register_forward_hook(self._pop)]
        self._handles += [relu.register_forward_pre_hook(self._note_relu_input) for relu in self._deferrable]
        return super().__enter__()

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles, self._running = [], []
        return super().__exit__(*exc)

    def _push(self, seq, args):
        self._running.append(seq)

    def _pop(self, seq, args, out):
        if self._running and self._running[-1] is seq:
            self._running.pop()

    def _note_relu_input(self, relu, args):
        by_its_sequential = bool(self._running) and self._running[-1] is self._deferrable[relu]
        self._defer = args[0] if args and by_its_sequential else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if func in _POOLS and args and args[0] is pending:
                y = strided_max_pool(func, args, kwargs)
                if y is None:  # torch's pooling, of the rectified input
                    return func(torch.relu(pending), *args[1:], **kwargs)
                return torch.relu(y)
            # not expected for the modules relus_before_pools chose: rectify it after all
            rectify = lambda a: torch.relu(a) if a is pending else a  # noqa: E731
            args, kwargs = tree_map(rectify, (args, kwargs))
        defer, self._defer = self._defer, None
        if (
            func in _RELUS
            and defer is not None
            and len(args) == 1
            and args[0] is defer
            and not kwargs.get("inplace", False)
        ):
            self._pending, self._relu = defer, None
            return defer
        if func in _POOLS:
            y = self._pool_after_relu(func, args, kwargs)
        elif func in _CONVS:
            y = small_conv(func, args, kwargs)
        else:
            y = None
        out = func(*args, **kwargs) if y is None else y
        if (
            func in _RELUS
            and not kwargs.get("inplace", False)
            and len(args) == 1
            and isinstance(out, torch.Tensor)
            and out is not args[0]
        ):
            x = args[0]
            self._relu = (weakref.ref(out), out._version, x, x._version)
        else:
            self._relu = None
        return out

    def _pool_after_relu(self, func, args, kwargs):
        relu, self._relu = self._relu, None
        if relu is not None and args:
            out_ref, out_version, x, x_version = relu
            # the pooled tensor is that ReLU's output, and neither it nor x changed in place
            if out_ref() is args[0] and args[0]._version == out_version and x._version == x_version:
                y = strided_max_pool(func, (x, *args[1:]), kwargs)
                if y is not None:
                    return torch.relu(y)
        return strided_max_pool(func, args, kwargs)
