"""How per-sample gradients are captured: the rows of G [N, P], row i = ∇θ ℓ(z_i) (+ ∇R(θ)).

How it is computed (docs/methods.md §1): ONE forward and ONE backward pass of the summed per-example
loss Σ_i ℓ_i. Forward hooks on the kernel layers (nn.Linear, nn.Conv1d, nn.Conv2d; see
``kernel_layers()``) capture each layer's input a; the backward pass returns the gradient d of
each layer's output. Because the model runs in eval mode, examples do not interact, so
d_i = ∂ℓ_i/∂y_i and the per-sample weight gradient is Σ_t d_{i,t} a_{i,t}ᵀ (a correlation for
a convolution). Native ops (hessext.ops) write those straight into column blocks of the
preallocated N×P output. Every other parameter — BatchNorm, LayerNorm, Embedding, a custom
module, a weight shared between modules or a layer called twice — goes through torch.func
(vmap of grad of functional_call over just those parameters), so every model gets the right
answer and models mixing both kinds just work. In the capture's forward pass, max pooling whose
window equals its stride and convolutions with few terms per output run on hessext's own ops
(hessext/per_sample/fast_forward.py): the same values and gradients (the convolution's to float rounding)
at a fraction of torch's CPU cost, which every per-sample tool otherwise pays.

Conventions:
- Columns follow ``model.named_parameters()`` order over the chosen parameters (``params``);
  ``unflatten_params(row, names, shapes)`` (or ``PerSampleGrads.unflatten``) splits a row back.
- ``loss_fn(outputs, targets)`` must return one loss per example, shape [N]
  (e.g. ``nn.CrossEntropyLoss(reduction="none")``).
- Kernel layers must see the batch on dim 0 (batch-first), as in BackPACK and Opacus.
- ``regularizer`` (e.g. ``hessext.regularizers.L2.from_weight_decay(λ, n)``) adds ∇R(θ) to
  every row: the toolbox convention g_z = ∇ℓ(z; θ) + (λ/n)θ.
- The model runs in eval mode inside ``preserved(model)``: its parameters, .grad, hooks and
  train/eval modes come back exactly as they were, also after an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from hessext import ops
from hessext._internal.contract import check_finite_parameters, check_inputs, check_targets, example_loss
from hessext._internal.guard import check_model, preserved
from hessext._internal.params import flat_parameters, functional_state, working_copy
from hessext.per_sample.fast_forward import FastForward

# exact types: a subclass may override forward, and then the closed-form gradient is not its own
KERNEL_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
_FLOAT_DTYPES = (torch.float32, torch.float64)


def kernel_layers() -> list[str]:
    """Layer types whose per-sample gradients come from native kernels (exact types; every
    other module with parameters goes through torch.func)."""
    return [t.__name__ for t in KERNEL_TYPES]


# ---------------------------------------------------------------------------------------------
# validation


def _check_args(fn, model, loss_fn, inputs, targets, params, dtype, regularizer):
    """Checked (names, tensors, dtype, inputs, targets) of a per-sample call."""
    check_model(model, fn)
    if not callable(loss_fn):
        raise TypeError(f"{fn}: loss_fn must be callable, got {type(loss_fn).__name__}")
    names, tensors = flat_parameters(model, params)
    for name, p in zip(names, tensors):
        if p.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"{fn}: parameter {name!r} has dtype {p.dtype}; per-sample "
                f"gradients support float32 and float64"
            )
    inputs = check_inputs(inputs, fn, model=model)
    targets = check_targets(targets, inputs.shape[0], fn)
    if regularizer is not None and not callable(getattr(regularizer, "grad", None)):
        raise TypeError(
            f"{fn}: regularizer must have a .grad(theta) method (e.g. "
            f"hessext.regularizers.L2), got {type(regularizer).__name__}"
        )
    check_finite_parameters(model, fn)
    if dtype is None:
        dtype = tensors[0].dtype
    elif dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{fn}: dtype must be torch.float32 or torch.float64, got {dtype}")
    device = tensors[0].device
    if inputs.device != device or targets.device != device:
        raise ValueError(
            f"{fn}: inputs ({inputs.device}) and targets ({targets.device}) must be "
            f"on the parameters' device {device}"
        )
    return names, tensors, dtype, inputs, targets


# ---------------------------------------------------------------------------------------------
# capture: one forward + one backward with hooks


@dataclass
class Layer:
    """A kernel layer's captured input a and output gradient d, and where its chosen
    parameters go (name of the weight / bias column block, or None when not chosen)."""

    module: nn.Module
    weight: str | None
    bias: str | None
    # filled by the capture pass (empty until then)
    a: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # Linear: [N, T, I]; Conv: [N, C, H, W]
    d: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # Linear: [N, T, O]; Conv: [N, O, Ho, Wo]
    conv_args: tuple = ()  # (stride, padding, dilation, groups), 2-D forms

    @property
    def ghost(self) -> bool:
        """Linear without a sequence axis: the ghost contractions apply (docs/methods.md §1)."""
        return isinstance(self.module, nn.Linear) and self.a.shape[1] == 1


@dataclass
class Capture:
    """What one capture pass recorded: the kernel layers' a and d, the parameters left to
    torch.func, the working state and the regulariser's gradient."""

    names: list[str]
    shapes: list[torch.Size]
    offsets: dict[str, int]
    n: int
    dtype: torch.dtype
    device: torch.device
    layers: list[Layer] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)  # chosen but unused by the loss
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    targets: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    reg_grad: torch.Tensor | None = None  # [P] or None


def _param_names_by_module(model):
    """{module: {attr: full name}} for every module's own parameters, and how many (module,
    attr) slots hold each parameter tensor (more than one: shared weights)."""
    slots = Counter()
    owned = {}
    for prefix, m in model.named_modules(remove_duplicate=False):
        for attr, p in m._parameters.items():
            if p is not None:
                slots[id(p)] += 1
                owned.setdefault(m, {})[attr] = f"{prefix}.{attr}" if prefix else attr
    return owned, slots


def _conv_geometry(m, a):
    """Input with any 'same' padding applied explicitly, and (stride, padding, dilation,
    groups) as pairs for the 2-D op (a Conv1d is a Conv2d with H = 1)."""
    if isinstance(m.padding, str):
        if m.padding == "same":
            a = F.pad(a, m._reversed_padding_repeated_twice)
        padding = (0,) * len(m.kernel_size)
    else:
        padding = m.padding
    stride, dilation = m.stride, m.dilation
    if isinstance(m, nn.Conv1d):
        a = a.unsqueeze(2)
        stride, padding, dilation = (1, *stride), (0, *padding), (1, *dilation)
    return a, (tuple(stride), tuple(padding), tuple(dilation), m.groups)


def capture(fn, model, loss_fn, inputs, targets, params, regularizer, dtype) -> Capture:
    """One forward and one backward pass of ``model`` with hooks on the kernel layers: their
    inputs a and output gradients d, and which parameters go through torch.func."""
    names, tensors, dtype, inputs, targets = _check_args(
        fn, model, loss_fn, inputs, targets, params, dtype, regularizer
    )
    n = inputs.shape[0]
    shapes = [p.shape for p in tensors]
    offsets, start = {}, 0
    for name, p in zip(names, tensors):
        offsets[name] = start
        start += p.numel()
    cap = Capture(names, shapes, offsets, n, dtype, tensors[0].device)
    chosen = set(names)

    # Functional state: chosen parameters as fresh leaves (so the user's .grad is never
    # touched), everything else as constants, all in the working dtype.
    cap.state = functional_state(model, dtype)
    leaves = {k: cap.state[k].requires_grad_(True) for k in names}
    cap.inputs = working_copy(inputs, dtype)
    cap.targets = working_copy(targets, dtype)
    if regularizer is not None:
        theta = torch.cat([cap.state[k].detach().reshape(-1) for k in names])
        cap.reg_grad = regularizer.grad(theta).to(dtype).reshape(-1)
        if cap.reg_grad.numel() != theta.numel():
            raise ValueError(
                f"{fn}: regularizer.grad returned {cap.reg_grad.numel()} values "
                f"for {theta.numel()} parameters"
            )

    owned, slots = _param_names_by_module(model)
    layers: dict[nn.Module, Layer] = {}
    calls: dict[nn.Module, list] = {}
    for m in model.modules():
        if type(m) not in KERNEL_TYPES or getattr(m, "padding_mode", "zeros") != "zeros":
            continue
        own = owned.get(m, {})
        weight, bias = own.get("weight"), own.get("bias")
        # a parameter shared with another module stays with torch.func, which sums its uses
        weight, bias = (
            (k if k in chosen and slots[id(m._parameters[attr])] == 1 else None)
            for k, attr in ((weight, "weight"), (bias, "bias"))
        )
        if weight is None and bias is None:
            continue
        layers[m] = Layer(m, weight, bias)
        calls[m] = []

    def hook(module, args, output):
        calls[module].append((args[0] if args else None, output))

    with preserved(model):
        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            # max pooling and small convolutions on hessext's ops: the same layers at a
            # fraction of torch's CPU cost (hessext/per_sample/fast_forward.py)
            with FastForward(model):
                outputs = torch.func.functional_call(model, cap.state, (cap.inputs,))
        finally:
            for h in handles:
                h.remove()
        example_loss(model, loss_fn, outputs[:2], cap.targets[:2], fn, allow_reduced=False)
        losses = loss_fn(outputs, cap.targets)
        if not isinstance(losses, torch.Tensor) or losses.shape != (n,):
            got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise ValueError(
                f"{fn}: loss_fn must return one loss per example, shape [{n}] "
                f"(e.g. nn.CrossEntropyLoss(reduction='none')), got {got}"
            )
        kept = []
        for m, layer in layers.items():
            ok = len(calls[m]) == 1 and calls[m][0][0] is not None
            if ok:
                a, y = calls[m][0]
                want_dim = 3 if type(m) is nn.Conv1d else 4 if type(m) is nn.Conv2d else None
                ok = (
                    a.shape[0] == n
                    and isinstance(y, torch.Tensor)
                    and y.shape[0] == n
                    and (want_dim is None and a.dim() >= 2 or a.dim() == want_dim)
                )
            if ok:
                layer.a, layer.d = a, y  # d is the output until the backward pass below
                kept.append(layer)
            else:  # called twice, never, or unbatched: torch.func handles it
                cap.fallback += [k for k in (layer.weight, layer.bias) if k is not None]
        outs = [layer.d for layer in kept]
        grads: list[torch.Tensor | None] = [None] * len(outs)
        live = [i for i, y in enumerate(outs) if y.requires_grad]
        if live and losses.requires_grad:
            found = torch.autograd.grad(losses.sum(), [outs[i] for i in live], allow_unused=True)
            for i, g in zip(live, found):
                grads[i] = g
        for layer, grad_out in zip(kept, grads):
            layer.d = (torch.zeros_like(layer.d) if grad_out is None else grad_out).detach()
            a = layer.a.detach()
            if isinstance(layer.module, nn.Linear):
                layer.a = a.reshape(n, -1, a.shape[-1])
                layer.d = layer.d.reshape(n, -1, layer.d.shape[-1])
            else:
                layer.a, layer.conv_args = _conv_geometry(layer.module, a)
                if isinstance(layer.module, nn.Conv1d):
                    layer.d = layer.d.unsqueeze(2)
        cap.layers = kept
    for leaf in leaves.values():
        leaf.requires_grad_(False)
    in_kernel = {k for layer in cap.layers for k in (layer.weight, layer.bias) if k is not None}
    cap.fallback = [k for k in names if k not in in_kernel]
    return cap


# ---------------------------------------------------------------------------------------------
# writing rows of G


def write_layer(layer: Layer, rows: slice, out: torch.Tensor, offsets: dict[str, int]):
    """Per-sample gradients of one kernel layer for samples ``rows`` into columns of ``out``
    ([len(rows), *]) at ``offsets``."""
    a, d = layer.a[rows], layer.d[rows]
    k = out.shape[0]
    if isinstance(layer.module, nn.Linear):
        O, I = d.shape[-1], a.shape[-1]
        if layer.weight is not None:
            s = offsets[layer.weight]
            ops.linear_weight_grad(a, d, out[:, s : s + O * I].view(k, O, I))
        if layer.bias is not None:
            s = offsets[layer.bias]
            ops.bias_grad(d, out[:, s : s + O])
    else:
        stride, padding, dilation, groups = layer.conv_args
        O = d.shape[1]
        if layer.weight is not None:
            w = cast(torch.Tensor, layer.module.weight)
            kh, kw = (1, w.shape[2]) if w.dim() == 3 else (w.shape[2], w.shape[3])
            s = offsets[layer.weight]
            block = out[:, s : s + w.numel()].view(k, O, w.shape[1], kh, kw)
            ops.conv_weight_grad(a, d, block, stride, padding, dilation, groups)
        if layer.bias is not None:
            s = offsets[layer.bias]
            ops.bias_grad(d.reshape(k, O, -1).transpose(1, 2), out[:, s : s + O])


def write_fallback(cap: Capture, model, loss_fn, names, rows: slice, out, offsets, chunk_size=None):
    """torch.func per-sample gradients of the parameters ``names`` for samples ``rows``."""
    if not names:
        return
    theta = {k: cap.state[k] for k in names}
    fixed = {k: v for k, v in cap.state.items() if k not in theta}

    def loss_one(theta, x, y):
        outputs = torch.func.functional_call(model, {**fixed, **theta}, (x.unsqueeze(0),))
        return loss_fn(outputs, y.unsqueeze(0)).sum()

    with preserved(model):
        grads = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(
            theta, cap.inputs[rows], cap.targets[rows]
        )
    k = out.shape[0]
    for name in names:
        s = offsets[name]
        g = grads[name].reshape(k, -1)
        out[:, s : s + g.shape[1]] = g
