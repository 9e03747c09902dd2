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
- A kernel layer is served by the kernels only with its stock forward (exact type, no hooks, no
  replaced forward: hessext/_internal/modules.py), called once, owning its parameters, and seeing
  the batch on dim 0 (checked by running one example alone); otherwise torch.func serves it and
  ``PerSampleGrads.fallback_reasons`` says why. Examples must not interact (checked the same way).
- ``regularizer`` (e.g. ``hessext.regularizers.L2.from_weight_decay(λ, n)``) adds ∇R(θ) to
  every row: the toolbox convention g_z = ∇ℓ(z; θ) + (λ/n)θ.
- The model runs in eval mode inside ``preserved(model)``: its parameters, .grad, hooks and
  train/eval modes come back exactly as they were, also after an error.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from hessext import ops
from hessext._internal.contract import (
    check_batch_output,
    check_examples_independent,
    check_finite_parameters,
    check_finite_rows,
    check_inputs,
    check_targets,
    example_loss,
    forward_or_explain,
)
from hessext._internal.guard import check_model, preserved
from hessext._internal.modules import not_stock
from hessext._internal.params import flat_parameters, functional_state, working_copy
from hessext._internal.per_example import Batched, over_examples
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
    # why each parameter left to torch.func is not on a kernel ({name: reason})
    reasons: dict[str, str] = field(default_factory=dict)
    clone_inputs: bool = False  # the model writes its input in place: every pass gets a copy
    who: str = "per_sample_grads"  # the public function, for error messages
    check_finite: bool = True  # refuse non-finite losses and gradients, naming the examples
    batched: Batched = field(default_factory=Batched)  # how torch.func runs over the examples


def _param_names_by_module(model):
    """{module: {attr: full name}} for every module's own parameters (a module registered twice
    under its first name, as named_parameters() lists it), and how many distinct (module, attr)
    slots hold each parameter tensor (more than one: weights shared between modules)."""
    slots = Counter()
    owned: dict[nn.Module, dict[str, str]] = {}
    for prefix, m in model.named_modules(remove_duplicate=False):
        first = m not in owned
        for attr, p in m._parameters.items():
            if p is not None and first:
                slots[id(p)] += 1
                owned.setdefault(m, {})[attr] = f"{prefix}.{attr}" if prefix else attr
        owned.setdefault(m, {})
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


def _kernel_candidates(model, chosen) -> tuple[dict[nn.Module, Layer], dict[str, str]]:
    """The kernel layers whose chosen parameters the native kernels may serve, and for every
    other chosen parameter why not (hessext/_internal/modules.py: exact type, no hooks, stock
    forward; a parameter of its own, zero padding)."""
    owned, slots = _param_names_by_module(model)
    labels = {m: name for name, m in model.named_modules(remove_duplicate=False)}
    layers: dict[nn.Module, Layer] = {}
    reasons: dict[str, str] = {}
    for m in model.modules():
        own = {attr: k for attr, k in owned.get(m, {}).items() if k in chosen}
        if not own:
            continue
        label = f"{labels.get(m) or 'the model'!r} ({type(m).__name__})"
        why = not_stock(m, KERNEL_TYPES)
        if why is None and getattr(m, "padding_mode", "zeros") != "zeros":
            why = f"padding_mode={m.padding_mode!r}"
        if why is None and set(own) - {"weight", "bias"}:
            why = "it has parameters other than weight and bias"
        if why is not None:
            reasons.update({k: f"{label}: {why}" for k in own.values()})
            continue
        # a parameter shared with another module stays with torch.func, which sums its uses
        kinds = {}
        for attr, k in own.items():
            if slots[id(m._parameters[attr])] == 1:
                kinds[attr] = k
            else:
                reasons[k] = f"{label}: its {attr} is shared with another module"
        if kinds:
            layers[m] = Layer(m, kinds.get("weight"), kinds.get("bias"))
    return layers, reasons


def _batched_call(m, call, n) -> str | None:
    """Why one recorded call (input a, output y) of kernel layer m cannot be served by the
    kernels for a batch of n examples, or None."""
    a, y = call
    want_dim = 3 if type(m) is nn.Conv1d else 4 if type(m) is nn.Conv2d else None
    if not (isinstance(a, torch.Tensor) and isinstance(y, torch.Tensor)):
        return "its call does not take and return tensors"
    if want_dim is None and a.dim() < 2 or want_dim is not None and a.dim() != want_dim:
        return f"its input has shape {tuple(a.shape)}, not a batch"
    if a.shape[0] != n or y.shape[0] != n:
        return (
            f"its input's dim 0 ({a.shape[0]}) is not the batch of {n} examples (the model moves the "
            "batch off dim 0, e.g. batch_first=False)"
        )
    return None


def capture(fn, model, loss_fn, inputs, targets, params, regularizer, dtype, *, check_finite=True) -> Capture:
    """One forward and one backward pass of ``model`` with hooks on the kernel layers: their
    inputs a and output gradients d, and which parameters go through torch.func (and why).

    Before it, one example runs alone (a copy of it): each kernel layer must see it as a batch
    of one on dim 0 (a model that moves the batch elsewhere is caught even when another axis
    happens to have N entries), its output must equal its row of the batch's (examples must not
    interact), and the model must leave its input unwritten (else every pass gets a copy).
    A kernel layer's output written in place later in the forward (nn.ReLU(inplace=True)) is
    captured from a copy, so that d is the gradient of the layer's own output."""
    names, tensors, dtype, inputs, targets = _check_args(
        fn, model, loss_fn, inputs, targets, params, dtype, regularizer
    )
    n = inputs.shape[0]
    shapes = [p.shape for p in tensors]
    offsets, start = {}, 0
    for name, p in zip(names, tensors):
        offsets[name] = start
        start += p.numel()
    cap = Capture(names, shapes, offsets, n, dtype, tensors[0].device, who=fn, check_finite=check_finite)

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

    layers, cap.reasons = _kernel_candidates(model, set(names))
    calls: dict[nn.Module, list] = {m: [] for m in layers}
    copied: set[nn.Module] = set()  # layers whose output the forward writes in place

    def hook(module, args, output):
        a = args[0] if args else None
        versions = tuple(t._version if isinstance(t, torch.Tensor) else None for t in (output, a))
        calls[module].append((a, output, *versions))
        if module in copied and isinstance(output, torch.Tensor):
            return output.clone()  # the rest of the forward writes the copy
        return None

    def forward(x, fast=True):
        for m in calls:
            calls[m] = []
        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            # max pooling and small convolutions on hessext's ops: the same layers at a
            # fraction of torch's CPU cost (hessext/per_sample/fast_forward.py)
            with FastForward(model) if fast else contextlib.nullcontext():
                return forward_or_explain(model, cap.state, x, fn)
        finally:
            for h in handles:
                h.remove()

    with preserved(model):
        one = cap.inputs[:1].clone()
        alone = forward(one, fast=False)
        cap.clone_inputs = one._version != 0
        probe = {m: c for m, c in calls.items()}
        if cap.clone_inputs:  # never let the model write the caller's tensor
            cap.inputs = cap.inputs.clone()
        outputs = forward(cap.inputs.clone() if cap.clone_inputs else cap.inputs)
        check_batch_output(outputs, n, fn)
        check_examples_independent(alone, outputs[:1], fn)
        written = {m for m, c in calls.items() if len(c) == 1 and _written_later(c[0], output=True)}
        if written:
            copied |= written
            outputs = forward(cap.inputs.clone() if cap.clone_inputs else cap.inputs)
        example_loss(model, loss_fn, outputs[:2], cap.targets[:2], fn, allow_reduced=False)
        losses = loss_fn(outputs, cap.targets)
        if not isinstance(losses, torch.Tensor) or losses.shape != (n,):
            got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise ValueError(
                f"{fn}: loss_fn must return one loss per example, shape [{n}] "
                f"(e.g. nn.CrossEntropyLoss(reduction='none')), got {got}"
            )
        if check_finite:
            check_finite_rows(losses.detach(), fn, "the loss")
        kept: list[Layer] = []
        labels = {m: name for name, m in model.named_modules()}
        for m, layer in layers.items():
            c = calls[m]
            why: str | None
            if len(c) != 1:
                why = "it is never called" if not c else f"it is called {len(c)} times in one forward"
            elif len(probe[m]) != 1:
                why = f"it is called {len(probe[m])} times for a single example"
            elif _written_later(c[0], output=False):
                why = "its input is written in place after it runs"
            else:
                why = _batched_call(m, c[0][:2], n) or _batched_call(m, probe[m][0][:2], 1)
            if why is None:
                layer.a, layer.d = c[0][0], c[0][1]  # d is the output until the backward pass below
                kept.append(layer)
            else:  # torch.func handles it
                label = f"{labels.get(m) or 'the model'!r} ({type(m).__name__})"
                cap.reasons.update({k: f"{label}: {why}" for k in (layer.weight, layer.bias) if k})
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
        if check_finite:  # the kernel columns are Σ_t d aᵀ: finite a and d give finite rows
            for layer in kept:
                check_finite_rows(layer.a, fn, "a layer's input")
                check_finite_rows(layer.d, fn, "the per-sample gradient")
            if cap.reg_grad is not None and not bool(torch.isfinite(cap.reg_grad).all()):
                raise ValueError(f"{fn}: the regulariser's gradient is not finite")
    for leaf in leaves.values():
        leaf.requires_grad_(False)
    in_kernel = {k for layer in cap.layers for k in (layer.weight, layer.bias) if k is not None}
    cap.fallback = [k for k in names if k not in in_kernel]
    cap.reasons = {k: cap.reasons.get(k, "no native kernel") for k in cap.fallback}
    return cap


def _written_later(call, *, output: bool) -> bool:
    """Whether the rest of the forward wrote a kernel layer's output (output=True) or input in
    place after the layer ran (call: input, output and their versions at the hook)."""
    a, y, y_version, a_version = call
    t, version = (y, y_version) if output else (a, a_version)
    return isinstance(t, torch.Tensor) and t._version != version


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
    """torch.func per-sample gradients of the parameters ``names`` for samples ``rows``
    (vmapped over the examples, or one example at a time where vmap cannot batch the model:
    ``cap.batched`` records which)."""
    if not names:
        return
    theta = {k: cap.state[k] for k in names}
    fixed = {k: v for k, v in cap.state.items() if k not in theta}
    fresh = cap.clone_inputs

    def loss_one(theta, x, y):
        x = x.unsqueeze(0)
        outputs = torch.func.functional_call(model, {**fixed, **theta}, (x.clone() if fresh else x,))
        return loss_fn(outputs, y.unsqueeze(0)).sum()

    with preserved(model):
        grads = over_examples(
            torch.func.grad(loss_one),
            (None, 0, 0),
            theta,
            cap.inputs[rows],
            cap.targets[rows],
            state=cap.batched,
            chunk_size=chunk_size,
        )
    k = out.shape[0]
    for name in names:
        s = offsets[name]
        g = grads[name].reshape(k, -1)
        if cap.check_finite:
            check_finite_rows(g, cap.who, "the per-sample gradient", first=rows.start, n=cap.n)
        out[:, s : s + g.shape[1]] = g
