"""Per-sample gradients: the N×P matrix G with row i = ∇θ ℓ(z_i) (+ ∇R(θ)), and a lazy
operator that multiplies with G without forming it.

How it is computed (METHODS.md §1): ONE forward and ONE backward pass of the summed per-example
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
(hessext/_fast_forward.py): the same values and gradients (the convolution's to float rounding)
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

import math
import sys
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from hessext import ops
from hessext._fast_forward import FastForward
from hessext._memory import empty_large
from hessext._model_guard import flat_parameters, preserved

__all__ = ["per_sample_grads", "PerSampleGrads", "unflatten_params", "kernel_layers"]

_KERNEL_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
_FLOAT_DTYPES = (torch.float32, torch.float64)
# The lazy operator materialises row chunks of at most this many elements by default.
_DEFAULT_CHUNK_ELEMS = 1 << 25


def kernel_layers() -> list[str]:
    """Layer types whose per-sample gradients come from native kernels (exact types; every
    other module with parameters goes through torch.func)."""
    return [t.__name__ for t in _KERNEL_TYPES]


def unflatten_params(row: torch.Tensor, names, shapes) -> dict[str, torch.Tensor]:
    """Split flat parameter vectors back into named tensors (views, no copy).

    row: [P] or [..., P] (e.g. a row of G, or G itself) → {name: [..., *shape]}."""
    sizes = [math.prod(s) for s in shapes]
    if row.shape[-1] != sum(sizes):
        raise ValueError(f"unflatten_params: row has {row.shape[-1]} entries, the parameters "
                         f"{list(names)} have {sum(sizes)}")
    lead = row.shape[:-1]
    return {n: piece.reshape(*lead, *s)
            for n, s, piece in zip(names, shapes, torch.split(row, sizes, dim=-1))}


# ---------------------------------------------------------------------------------------------
# validation


def _check_args(fn, model, loss_fn, inputs, targets, params, dtype, regularizer):
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"{fn}: loss_fn must be callable, got {type(loss_fn).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{fn}: inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"{fn}: targets must be a torch.Tensor, got {type(targets).__name__}")
    if inputs.dim() == 0 or targets.dim() == 0:
        raise ValueError(f"{fn}: inputs and targets need a batch dimension, got shapes "
                         f"{tuple(inputs.shape)} and {tuple(targets.shape)}")
    n = inputs.shape[0]
    if n == 0:
        raise ValueError(f"{fn}: inputs is an empty batch (shape {tuple(inputs.shape)})")
    if targets.shape[0] != n:
        raise ValueError(f"{fn}: targets has batch size {targets.shape[0]} but inputs has {n}")
    if regularizer is not None and not callable(getattr(regularizer, "grad", None)):
        raise TypeError(f"{fn}: regularizer must have a .grad(theta) method (e.g. "
                        f"hessext.regularizers.L2), got {type(regularizer).__name__}")
    names, tensors = flat_parameters(model, params)
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise ValueError(f"{fn}: parameter {name!r} has non-finite values (nan or inf)")
    for name, p in zip(names, tensors):
        if p.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{fn}: parameter {name!r} has dtype {p.dtype}; per-sample "
                            f"gradients support float32 and float64")
    if dtype is None:
        dtype = tensors[0].dtype
    elif dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{fn}: dtype must be torch.float32 or torch.float64, got {dtype}")
    if inputs.is_floating_point():
        if inputs.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{fn}: inputs has dtype {inputs.dtype}; use float32 or float64 "
                            f"(half precision is not supported)")
    elif inputs.is_complex() or inputs.dtype == torch.bool:
        raise TypeError(f"{fn}: inputs has unsupported dtype {inputs.dtype}")
    elif not any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules()):
        raise TypeError(f"{fn}: inputs has integer dtype {inputs.dtype}, which only models that "
                        f"embed indices (nn.Embedding) accept; use float32 or float64 inputs")
    if targets.is_floating_point() and targets.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{fn}: targets has dtype {targets.dtype}; use float32 or float64")
    device = tensors[0].device
    if inputs.device != device or targets.device != device:
        raise ValueError(f"{fn}: inputs ({inputs.device}) and targets ({targets.device}) must be "
                         f"on the parameters' device {device}")
    return names, tensors, dtype


# ---------------------------------------------------------------------------------------------
# capture: one forward + one backward with hooks


@dataclass
class _Layer:
    """A kernel layer's captured input a and output gradient d, and where its chosen
    parameters go (name of the weight / bias column block, or None when not chosen)."""
    module: nn.Module
    weight: str | None
    bias: str | None
    a: torch.Tensor | None = None     # Linear: [N, T, I]; Conv: [N, C, H, W] (padding applied)
    d: torch.Tensor | None = None     # Linear: [N, T, O]; Conv: [N, O, Ho, Wo]
    conv_args: tuple = ()             # (stride, padding, dilation, groups), 2-D forms

    @property
    def ghost(self) -> bool:
        """Linear without a sequence axis: the ghost contractions apply (METHODS §1)."""
        return isinstance(self.module, nn.Linear) and self.a.shape[1] == 1


@dataclass
class _Capture:
    names: list[str]
    shapes: list[torch.Size]
    offsets: dict[str, int]
    n: int
    dtype: torch.dtype
    device: torch.device
    layers: list[_Layer] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    zero: list[str] = field(default_factory=list)        # chosen but unused by the loss
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    reg_grad: torch.Tensor | None = None                  # [P] or None


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


def _capture(fn, model, loss_fn, inputs, targets, params, regularizer, dtype) -> _Capture:
    names, tensors, dtype = _check_args(fn, model, loss_fn, inputs, targets, params, dtype,
                                        regularizer)
    n = inputs.shape[0]
    shapes = [p.shape for p in tensors]
    offsets, start = {}, 0
    for name, p in zip(names, tensors):
        offsets[name] = start
        start += p.numel()
    cap = _Capture(names, shapes, offsets, n, dtype, tensors[0].device)
    chosen = set(names)

    # Functional state: chosen parameters as fresh leaves (so the user's .grad is never
    # touched), everything else as constants, all in the working dtype.
    def cast(t):
        return t.detach().to(dtype) if t.is_floating_point() else t.detach()
    cap.state = {k: cast(p) for k, p in model.named_parameters()}
    cap.state.update({k: cast(b) for k, b in model.named_buffers()})
    leaves = {k: cap.state[k].requires_grad_(True) for k in names}
    cap.inputs = cast(inputs) if inputs.is_floating_point() else inputs.detach()
    cap.targets = cast(targets) if targets.is_floating_point() else targets.detach()
    if regularizer is not None:
        theta = torch.cat([cap.state[k].detach().reshape(-1) for k in names])
        cap.reg_grad = regularizer.grad(theta).to(dtype).reshape(-1)
        if cap.reg_grad.numel() != theta.numel():
            raise ValueError(f"{fn}: regularizer.grad returned {cap.reg_grad.numel()} values "
                             f"for {theta.numel()} parameters")

    owned, slots = _param_names_by_module(model)
    layers, calls = {}, {}
    for m in model.modules():
        if type(m) not in _KERNEL_TYPES or getattr(m, "padding_mode", "zeros") != "zeros":
            continue
        own = owned.get(m, {})
        weight, bias = own.get("weight"), own.get("bias")
        # a parameter shared with another module stays with torch.func, which sums its uses
        weight, bias = ((k if k in chosen and slots[id(m._parameters[attr])] == 1 else None)
                        for k, attr in ((weight, "weight"), (bias, "bias")))
        if weight is None and bias is None:
            continue
        layers[m] = _Layer(m, weight, bias)
        calls[m] = []

    def hook(module, args, output):
        calls[module].append((args[0] if args else None, output))

    with preserved(model):
        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            # max pooling and small convolutions on hessext's ops: the same layers at a
            # fraction of torch's CPU cost (hessext/_fast_forward.py)
            with FastForward(model):
                outputs = torch.func.functional_call(model, cap.state, (cap.inputs,))
        finally:
            for h in handles:
                h.remove()
        losses = loss_fn(outputs, cap.targets)
        if not isinstance(losses, torch.Tensor) or losses.shape != (n,):
            got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise ValueError(f"{fn}: loss_fn must return one loss per example, shape [{n}] "
                             f"(e.g. nn.CrossEntropyLoss(reduction='none')), got {got}")
        kept = []
        for m, layer in layers.items():
            ok = len(calls[m]) == 1 and calls[m][0][0] is not None
            if ok:
                a, y = calls[m][0]
                want_dim = {nn.Conv1d: 3, nn.Conv2d: 4}.get(type(m))
                ok = (a.shape[0] == n and isinstance(y, torch.Tensor) and y.shape[0] == n
                      and (want_dim is None and a.dim() >= 2 or a.dim() == want_dim))
            if ok:
                layer.a, layer.d = a, y  # d is the output until the backward pass below
                kept.append(layer)
            else:  # called twice, never, or unbatched: torch.func handles it
                cap.fallback += [k for k in (layer.weight, layer.bias) if k is not None]
        outs = [layer.d for layer in kept]
        grads = [None] * len(outs)
        live = [i for i, y in enumerate(outs) if y.requires_grad]
        if live and losses.requires_grad:
            got = torch.autograd.grad(losses.sum(), [outs[i] for i in live], allow_unused=True)
            for i, g in zip(live, got):
                grads[i] = g
        for layer, g in zip(kept, grads):
            y = layer.d
            layer.d = (torch.zeros_like(y) if g is None else g).detach()
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


def _write_layer(layer: _Layer, rows: slice, out: torch.Tensor, offsets: dict[str, int]):
    """Per-sample gradients of one kernel layer for samples ``rows`` into columns of ``out``
    ([len(rows), *]) at ``offsets``."""
    a, d = layer.a[rows], layer.d[rows]
    k = out.shape[0]
    if isinstance(layer.module, nn.Linear):
        O, I = d.shape[-1], a.shape[-1]
        if layer.weight is not None:
            s = offsets[layer.weight]
            ops.linear_weight_grad(a, d, out[:, s:s + O * I].view(k, O, I))
        if layer.bias is not None:
            s = offsets[layer.bias]
            ops.bias_grad(d, out[:, s:s + O])
    else:
        stride, padding, dilation, groups = layer.conv_args
        O = d.shape[1]
        if layer.weight is not None:
            w = layer.module.weight
            kh, kw = (1, w.shape[2]) if w.dim() == 3 else (w.shape[2], w.shape[3])
            s = offsets[layer.weight]
            block = out[:, s:s + w.numel()].view(k, O, w.shape[1], kh, kw)
            ops.conv_weight_grad(a, d, block, stride, padding, dilation, groups)
        if layer.bias is not None:
            s = offsets[layer.bias]
            ops.bias_grad(d.reshape(k, O, -1).transpose(1, 2), out[:, s:s + O])


def _write_fallback(cap: _Capture, model, loss_fn, names, rows: slice, out, offsets,
                    chunk_size=None):
    """torch.func per-sample gradients of the parameters ``names`` for samples ``rows``."""
    if not names:
        return
    theta = {k: cap.state[k] for k in names}
    fixed = {k: v for k, v in cap.state.items() if k not in theta}

    def loss_one(theta, x, y):
        outputs = torch.func.functional_call(model, {**fixed, **theta}, (x.unsqueeze(0),))
        return loss_fn(outputs, y.unsqueeze(0)).sum()

    with preserved(model):
        grads = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0),
                                chunk_size=chunk_size)(theta, cap.inputs[rows], cap.targets[rows])
    k = out.shape[0]
    for name in names:
        s = offsets[name]
        g = grads[name].reshape(k, -1)
        out[:, s:s + g.shape[1]] = g


def _progress(iterable, total, enabled, desc):
    if enabled is None:
        enabled = total > 1 and sys.stderr.isatty()
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc)


# ---------------------------------------------------------------------------------------------
# public API


def per_sample_grads(model: nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor, *,
                     params=None, regularizer=None, out: torch.Tensor | None = None,
                     dtype: torch.dtype | None = None, chunk_size: int | None = None) -> torch.Tensor:
    """Per-sample gradients G: [N, P], row i = ∇θ ℓ(z_i) (+ ∇R(θ) with a regularizer).

    model: any nn.Module (run in eval mode, left untouched); loss_fn(outputs, targets) → [N]
    per-example losses; inputs: [N, ...] (float32/float64, or integer indices for models with
    nn.Embedding); targets: [N, ...]; params: None (all parameters requiring grad), or names or
    tensors of the model's parameters; columns follow named_parameters() order over them.
    regularizer: e.g. ``L2.from_weight_decay(λ, n)``, adds ∇R(θ) to every row.
    out: optional preallocated [N, P] tensor of the working dtype with contiguous rows.
    dtype: working and output dtype (default: the parameters'); float64 on a float32 model
    computes everything in float64. chunk_size: samples per torch.func call for layers without
    a kernel (None: all at once)."""
    fn = "per_sample_grads"
    cap = _capture(fn, model, loss_fn, inputs, targets, params, regularizer, dtype)
    P = sum(math.prod(s) for s in cap.shapes)
    if out is None:
        out = empty_large(cap.n, P, cap.dtype, cap.device)
    elif not isinstance(out, torch.Tensor) or out.shape != (cap.n, P) or out.dtype != cap.dtype \
            or out.device != cap.device or (P > 1 and out.stride(1) != 1):
        got = (tuple(out.shape), out.dtype, out.device) if isinstance(out, torch.Tensor) else type(out)
        raise ValueError(f"{fn}: out must be a [{cap.n}, {P}] {cap.dtype} tensor on {cap.device} "
                         f"with contiguous rows, got {got}")
    rows = slice(0, cap.n)
    for layer in cap.layers:
        _write_layer(layer, rows, out, cap.offsets)
    _write_fallback(cap, model, loss_fn, cap.fallback, rows, out, cap.offsets, chunk_size)
    if cap.reg_grad is not None:
        out += cap.reg_grad
    return out


class PerSampleGrads:
    """The per-sample gradient matrix G [N, P] as a lazy linear operator; never forms all of G.

    Supports ``G @ V`` (V: [P, M] or [P] → [N, M] or [N]), ``G.T @ U`` (``.T`` is a view
    object; equivalently ``G.rmatmul(U)``; U: [N, M] or [N] → [P, M] or [P]),
    ``G.row_norms()`` → [N], ``G.gram()`` → [N, N], ``G.materialize()`` → [N, P], ``G.shape``,
    ``G.param_names``, ``G.param_shapes``, ``G.unflatten(row)``, and which parameters the native
    kernels serve (``G.kernel_param_names``) or torch.func (``G.fallback_param_names``).

    Linear layers without a sequence axis use the ghost contractions of METHODS §1 (memory
    O(N·width), independent of P). Everything else (convolutions, Linear over sequences,
    layers without a kernel) is materialised ``chunk_size`` rows at a time, so the memory is
    bounded by chunk_size × (their parameter count). The regulariser term g_i + r enters
    exactly as rank-one corrections. One forward and backward pass happen at construction;
    the object reflects the parameters at that moment (do not modify the model in place while
    using it). Arguments as in ``per_sample_grads``.
    """

    def __init__(self, model: nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor, *,
                 params=None, regularizer=None, chunk_size: int | None = None,
                 dtype: torch.dtype | None = None, ghost: bool = True, progress: bool | None = None):
        fn = "PerSampleGrads"
        self._cap = _capture(fn, model, loss_fn, inputs, targets, params, regularizer, dtype)
        self._model, self._loss_fn, self._progress = model, loss_fn, progress
        cap = self._cap
        self.param_names = list(cap.names)
        # which parameters the native kernels serve and which go through torch.func
        self.kernel_param_names = [k for k in cap.names if k not in set(cap.fallback)]
        self.fallback_param_names = list(cap.fallback)
        self.param_shapes = [torch.Size(s) for s in cap.shapes]
        numel = {k: math.prod(s) for k, s in zip(cap.names, cap.shapes)}
        P = sum(numel.values())
        self.shape = torch.Size((cap.n, P))
        self.dtype, self.device = cap.dtype, cap.device
        self._ghost = [layer for layer in cap.layers if ghost and layer.ghost]
        self._row_layers = [layer for layer in cap.layers if not (ghost and layer.ghost)]
        # Columns materialised by row chunks, in global order, with offsets local to the chunk.
        row_names = [k for layer in self._row_layers for k in (layer.weight, layer.bias) if k]
        row_names = [k for k in cap.names if k in set(row_names) | set(cap.fallback)]
        self._row_offsets, local = {}, 0
        for k in row_names:
            self._row_offsets[k] = local
            local += numel[k]
        self._row_width = local
        self._row_cols = (torch.cat([torch.arange(cap.offsets[k], cap.offsets[k] + numel[k],
                                                  device=cap.device) for k in row_names])
                          if row_names else None)
        if chunk_size is None:
            chunk_size = max(1, _DEFAULT_CHUNK_ELEMS // max(1, self._row_width))
        if int(chunk_size) < 1:
            raise ValueError(f"{fn}: chunk_size must be a positive integer, got {chunk_size}")
        self.chunk_size = int(chunk_size)

    # -- helpers -------------------------------------------------------------------------------

    def __repr__(self):
        return (f"PerSampleGrads(shape={tuple(self.shape)}, dtype={self.dtype}, ghost layers="
                f"{len(self._ghost)}, row-chunked columns={self._row_width})")

    def unflatten(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split [P] or [..., P] into {name: [..., *shape]} (views)."""
        return unflatten_params(row, self.param_names, self.param_shapes)

    @property
    def T(self) -> "_Transposed":
        """Gᵀ as a lazy view: ``G.T @ U`` is ``G.rmatmul(U)``."""
        return _Transposed(self)

    def _chunks(self, desc):
        n, c = self.shape[0], self.chunk_size
        starts = range(0, n, c)
        return _progress((slice(s, min(s + c, n)) for s in starts), len(starts), self._progress, desc)

    def _row_block(self, rows: slice) -> torch.Tensor:
        """G[rows] restricted to the row-chunked columns, regulariser excluded."""
        cap = self._cap
        out = empty_large(rows.stop - rows.start, self._row_width, self.dtype, self.device)
        for layer in self._row_layers:
            _write_layer(layer, rows, out, self._row_offsets)
        _write_fallback(cap, self._model, self._loss_fn, cap.fallback, rows, out, self._row_offsets)
        return out

    def _ghost_parts(self, layer):
        """(a [N, I], d [N, O]) of a ghost layer."""
        return layer.a[:, 0, :], layer.d[:, 0, :]

    def _as_matrix(self, x, rows_expected, what):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"PerSampleGrads.{what}: expected a torch.Tensor, got {type(x).__name__}")
        vec = x.dim() == 1
        m = x.unsqueeze(1) if vec else x
        if m.dim() != 2 or m.shape[0] != rows_expected:
            raise ValueError(f"PerSampleGrads.{what}: expected shape [{rows_expected}, M] or "
                             f"[{rows_expected}], got {tuple(x.shape)}")
        if not m.is_floating_point():
            raise TypeError(f"PerSampleGrads.{what}: expected a floating tensor, got {m.dtype}")
        return m.to(device=self.device, dtype=self.dtype), vec

    # -- raw products (no regulariser) ---------------------------------------------------------

    def _matmul_raw(self, V: torch.Tensor) -> torch.Tensor:
        off = self._cap.offsets
        out = torch.zeros(self.shape[0], V.shape[1], dtype=self.dtype, device=self.device)
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            O, I = d.shape[1], a.shape[1]
            if layer.weight:
                out += ops.linear_ghost_matvec(a, d, V[off[layer.weight]:off[layer.weight] + O * I])
            if layer.bias:
                out += d @ V[off[layer.bias]:off[layer.bias] + O]
        if self._row_width:
            Vr = V[self._row_cols]
            for rows in self._chunks("G @ V"):
                out[rows] += self._row_block(rows) @ Vr
        return out

    def _rmatmul_raw(self, U: torch.Tensor) -> torch.Tensor:
        off = self._cap.offsets
        out = torch.zeros(self.shape[1], U.shape[1], dtype=self.dtype, device=self.device)
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            O, I = d.shape[1], a.shape[1]
            if layer.weight:
                out[off[layer.weight]:off[layer.weight] + O * I] = ops.linear_ghost_rmatvec(a, d, U)
            if layer.bias:
                out[off[layer.bias]:off[layer.bias] + O] = d.T @ U
        if self._row_width:
            acc = torch.zeros(self._row_width, U.shape[1], dtype=self.dtype, device=self.device)
            for rows in self._chunks("G.T @ U"):
                acc += self._row_block(rows).T @ U[rows]
            out[self._row_cols] = acc
        return out

    def _sqnorms_raw(self) -> torch.Tensor:
        out = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            if layer.weight:
                out += ops.linear_ghost_sqnorms(a, d)
            if layer.bias:
                out += d.square().sum(1)
        if self._row_width:
            for rows in self._chunks("row norms"):
                out[rows] += self._row_block(rows).square().sum(1)
        return out

    def _gram_raw(self) -> torch.Tensor:
        n = self.shape[0]
        out = torch.zeros(n, n, dtype=self.dtype, device=self.device)
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            if layer.weight:
                out += ops.linear_ghost_gram(a, d)
            if layer.bias:
                out += d @ d.T
        if self._row_width:
            chunks = list(self._chunks("Gram"))
            if len(chunks) == 1:
                block = self._row_block(chunks[0])
                out += block @ block.T
            else:
                # Blocks (i, j >= i): each row chunk is recomputed per pair rather than stored,
                # keeping memory at two chunks.
                for i, ri in enumerate(chunks):
                    bi = self._row_block(ri)
                    out[ri, ri] += bi @ bi.T
                    for rj in chunks[i + 1:]:
                        c = bi @ self._row_block(rj).T
                        out[ri, rj] += c
                        out[rj, ri] += c.T
        return out

    # -- public products -----------------------------------------------------------------------

    def __matmul__(self, V: torch.Tensor) -> torch.Tensor:
        """G @ V: V [P, M] or [P] → [N, M] or [N]."""
        V, vec = self._as_matrix(V, self.shape[1], "__matmul__")
        out = self._matmul_raw(V)
        r = self._cap.reg_grad
        if r is not None:  # (G + 1 rᵀ) V = G V + 1 (rᵀ V)
            out += (r @ V).unsqueeze(0)
        return out.squeeze(1) if vec else out

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """Same as ``G @ V``."""
        return self @ V

    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """Gᵀ U: U [N, M] or [N] → [P, M] or [P]."""
        U, vec = self._as_matrix(U, self.shape[0], "rmatmul")
        out = self._rmatmul_raw(U)
        r = self._cap.reg_grad
        if r is not None:  # (G + 1 rᵀ)ᵀ U = Gᵀ U + r (1ᵀ U)
            out += r.unsqueeze(1) * U.sum(0, keepdim=True)
        return out.squeeze(1) if vec else out

    t_matmul = rmatmul

    def row_norms(self) -> torch.Tensor:
        """‖g_i‖₂ for every example: [N]."""
        sq = self._sqnorms_raw()
        r = self._cap.reg_grad
        if r is not None:  # ‖g + r‖² = ‖g‖² + 2 gᵀr + ‖r‖²
            sq = sq + 2 * self._matmul_raw(r.unsqueeze(1)).squeeze(1) + r @ r
        return sq.clamp_min(0).sqrt()

    def gram(self) -> torch.Tensor:
        """G Gᵀ: [N, N]."""
        out = self._gram_raw()
        r = self._cap.reg_grad
        if r is not None:  # (G + 1rᵀ)(G + 1rᵀ)ᵀ = GGᵀ + (Gr)1ᵀ + 1(Gr)ᵀ + ‖r‖²
            gr = self._matmul_raw(r.unsqueeze(1)).squeeze(1)
            out += gr.unsqueeze(1) + gr.unsqueeze(0) + r @ r
        return out

    def materialize(self) -> torch.Tensor:
        """The whole matrix G: [N, P] (what ``per_sample_grads`` returns)."""
        cap = self._cap
        out = empty_large(*self.shape, self.dtype, self.device)
        rows = slice(0, cap.n)
        for layer in cap.layers:
            _write_layer(layer, rows, out, cap.offsets)
        _write_fallback(cap, self._model, self._loss_fn, cap.fallback, rows, out, cap.offsets,
                        self.chunk_size)
        if cap.reg_grad is not None:
            out += cap.reg_grad
        return out


class _Transposed:
    """Gᵀ for ``G.T @ U``."""

    def __init__(self, g: PerSampleGrads):
        self._g = g
        self.shape = torch.Size((g.shape[1], g.shape[0]))

    def __matmul__(self, U: torch.Tensor) -> torch.Tensor:
        return self._g.rmatmul(U)

    @property
    def T(self) -> PerSampleGrads:
        return self._g
