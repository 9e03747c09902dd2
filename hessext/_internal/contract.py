"""The one input and loss contract of hessext (docs/conventions.md).

Data
    ``(inputs [N, ...], targets [N, ...])`` — or, for the curvature, an iterable of such
    mini-batches of any sizes. Inputs are float32/float64 (integer indices only for models that
    embed them), finite, non-empty, with the batch on dim 0; targets have the same N.

Loss
    ``loss_fn(outputs, targets)`` returns ONE LOSS PER EXAMPLE, shape [N] (reduction='none',
    summed over any output axes). Where the meaning is unambiguous — the curvature of the mean
    training loss and the toolbox methods built on it (influence, RUE, extrapolation score,
    ...) — a mean- or sum-reduced scalar loss is accepted too: a probe on two examples checks
    that it IS the mean or the sum of the per-example values, and it is then evaluated one
    example at a time. ``per_sample_grads`` refuses a reduced loss, because peers (BackPACK,
    Opacus) return ∇ℓ_i / N for a mean-reduced one and either reading would surprise someone.

    The loss must depend on the model's parameters only through ``outputs``. A loss that closes
    over ``model.parameters()`` (a regulariser written into it, the original toolbox's habit)
    would be evaluated on the user's tensors while hessext differentiates working copies, so its
    term would silently vanish: it is detected and refused with a pointer to ``regularizer=``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

Batch = tuple[torch.Tensor, torch.Tensor]
_FLOAT_DTYPES = (torch.float32, torch.float64)


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of a floating tensor is finite: one summing pass without a mask (nan
    and inf reach the sum; only a sum that overflows takes the elementwise test)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _embeds_indices(model: nn.Module | None) -> bool:
    return model is not None and any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())


def check_inputs(
    x, who: str, *, model: nn.Module | None = None, name: str = "inputs", min_dim: int = 1
) -> torch.Tensor:
    """Inputs [N, ...] (at least ``min_dim`` dimensions): a non-empty tensor with a sample axis,
    float32/float64 (integer only for a model with nn.Embedding), finite. Returns it (an
    inference-mode tensor is cloned so that autograd may record it). ``name``: what the caller
    calls the argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < max(1, min_dim) or x.shape[0] == 0:
        why = f"{name} is an empty batch" if x.dim() and x.shape[0] == 0 else "too few dimensions"
        raise ValueError(
            f"{who}: {name} must be a non-empty batch [N, ...] with at least {max(1, min_dim)} "
            f"dimensions, got shape {tuple(x.shape)} ({why})"
        )
    if x.is_floating_point():
        if x.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"{who}: {name} has dtype {x.dtype}; use float32 or float64 (half precision is not supported)"
            )
        if not all_finite(x):
            bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())
            raise ValueError(
                f"{who}: {name} contains non-finite values (nan or inf) in {bad} of {x.shape[0]} samples"
            )
    elif x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{who}: {name} has unsupported dtype {x.dtype}; use float32 or float64")
    elif not _embeds_indices(model):
        raise TypeError(
            f"{who}: {name} has integer dtype {x.dtype}, which only models that "
            "embed indices (nn.Embedding) accept; convert them with x.float() or "
            "x.double()"
        )
    return x.clone() if x.is_inference() else x


def check_targets(y, n: int, who: str) -> torch.Tensor:
    """Targets [N, ...] matching N inputs; floating targets float32/float64 and finite."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{who}: targets must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() == 0 or y.shape[0] != n:
        got = "no batch dimension" if y.dim() == 0 else f"batch size {y.shape[0]}"
        raise ValueError(f"{who}: targets has {got} but inputs has {n} (targets shape {tuple(y.shape)})")
    if y.is_floating_point():
        if y.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{who}: targets has dtype {y.dtype}; use float32 or float64")
        if not all_finite(y):
            raise ValueError(f"{who}: targets contains non-finite values (nan or inf)")
    return y.clone() if y.is_inference() else y


def split_pair(data, who: str, *, need_targets: bool, model: nn.Module | None = None):
    """(inputs, targets) from ``data``: a pair (inputs, targets) or, when labels are not
    needed, a bare inputs tensor (targets None). Both checked as above."""
    if isinstance(data, torch.Tensor):
        if need_targets:
            raise ValueError(
                f"{who}: expected a pair (inputs, targets); got a bare tensor of "
                f"shape {tuple(data.shape)} and this option needs the labels"
            )
        inputs, targets = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        inputs, targets = data
    else:
        raise TypeError(f"{who}: expected (inputs, targets) or an inputs tensor, got {type(data).__name__}")
    inputs = check_inputs(inputs, who, model=model)
    if targets is not None:
        targets = check_targets(targets, inputs.shape[0], who)
    elif need_targets:
        raise ValueError(f"{who}: this option needs the labels; pass (inputs, targets)")
    return inputs, targets


def as_batches(data, who: str, *, model: nn.Module | None = None) -> list[Batch]:
    """(inputs, targets) or an iterable of such pairs → a list of checked, non-empty pairs.

    The iterable is consumed once (generators and DataLoaders both work); the assembly passes
    over the list several times."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        raw = [tuple(data)]
    else:
        try:
            raw = [tuple(b) for b in data]
        except TypeError:
            raise TypeError(
                f"{who}: data must be an (inputs, targets) pair of tensors or an "
                f"iterable of such pairs, got {type(data).__name__}"
            ) from None
    batches = []
    for i, b in enumerate(raw):
        if not (len(b) == 2 and all(isinstance(t, torch.Tensor) for t in b)):
            raise TypeError(f"{who}: mini-batch {i} is not an (inputs, targets) pair of tensors")
        x, y = b
        if x.dim() > 0 and x.shape[0] == 0:
            continue
        where = f"{who}: mini-batch {i}" if len(raw) > 1 else who
        x = check_inputs(x, where, model=model)
        batches.append((x, check_targets(y, x.shape[0], where)))
    if not batches:
        raise ValueError(f"{who}: data holds no examples")
    return batches


def check_finite_parameters(model: nn.Module, who: str) -> None:
    """Non-finite parameters or buffers make every curvature and gradient NaN: refuse them."""
    for kind, items in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and not all_finite(t):
                raise ValueError(f"{who}: {kind} {name!r} has non-finite values (nan or inf)")


def forward_or_explain(model: nn.Module, state: dict, x: torch.Tensor, who: str):
    """``functional_call(model, state, (x,))``; a failure of the user's forward (wrong input
    shape, dtype, ...) is re-raised as one line naming the inputs' shape, the original chained."""
    try:
        return functional_call(model, state, (x,))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"{who}: the model's forward failed on inputs of shape {tuple(x.shape)} ({x.dtype}): "
            f"{type(err).__name__}: {first}"
        ) from err


def check_batch_output(outputs, n: int, who: str) -> None:
    """The model must return a tensor with the batch on dim 0: [N, ...]."""
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"{who}: the model must return a tensor [N, ...], got {type(outputs).__name__}")
    if outputs.dim() == 0 or outputs.shape[0] != n:
        raise ValueError(
            f"{who}: the model must return its outputs with the batch on dim 0, [{n}, ...]; for "
            f"{n} inputs it returned shape {tuple(outputs.shape)}"
        )


def interaction(alone, in_batch) -> str | None:
    """How the first example's output run by itself (``alone`` [1, ...]) differs from its row of
    the batch's output (``in_batch``), or None when they agree to rounding (relative 1e-3 in
    float32, 1e-8 in float64: far above the differences of batched and unbatched arithmetic,
    far below what a batch statistic changes). Non-finite outputs are reported where used."""
    if not (isinstance(alone, torch.Tensor) and isinstance(in_batch, torch.Tensor)):
        return None
    if alone.shape != in_batch.shape or not alone.is_floating_point():
        return (
            f"the model's output for one example has shape {tuple(alone.shape)} but its row of the "
            f"batch's output has shape {tuple(in_batch.shape)}"
        )
    a, b = alone.detach().double(), in_batch.detach().double()
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return None
    tol = 1e-8 if alone.dtype == torch.float64 else 1e-3
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    diff = float((a - b).abs().max())
    if diff > tol * scale:
        return (
            "the model's output for an example depends on the other examples of its batch (or is "
            f"random in eval mode): the first example run alone differs from its row of the batch's "
            f"output by {diff / scale:.2g} (relative)"
        )
    return None


def check_examples_independent(alone, in_batch, who: str) -> None:
    """Refuse a model through which examples interact (``interaction``)."""
    why = interaction(alone, in_batch)
    if why is not None:
        raise ValueError(
            f"{who}: {why}. Per-example gradients and curvatures need examples that do not "
            "interact: e.g. no batch statistic (x.mean(0)), no attention or recurrence over the "
            "batch axis (nn.MultiheadAttention or nn.LSTM with batch_first=False given [N, T, D]), "
            "no noise in eval mode"
        )


def check_finite_rows(
    values: torch.Tensor, who: str, what: str, *, first: int = 0, n: int | None = None
) -> None:
    """Refuse non-finite rows of a per-example quantity ([rows, ...], examples first, first + 1,
    ... of n), naming the examples."""
    if all_finite(values):
        return
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
    if bool(bad.any()):
        idx = (bad.nonzero()[:, 0] + first).tolist()
        n = values.shape[0] if n is None else n
        shown = ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "")
        raise ValueError(
            f"{who}: {what} is not finite (nan or inf) for {len(idx)} of {n} examples "
            f"(indices [{shown}]); the inputs and parameters are finite, so the model or loss_fn "
            "produces it there (e.g. a log of 0, an overflow)"
        )


# inputs and parameters are checked finite before any work: a non-finite result then comes from
# the model or the loss itself
NOT_FINITE_HINT = (
    "the inputs and parameters are finite, so the model or loss_fn has no finite derivatives "
    "there (e.g. a log of 0, an overflow)"
)


def check_finite_result(values: torch.Tensor, who: str, what: str, hint: str = "") -> torch.Tensor:
    """Refuse a result with non-finite entries, saying what it is and how many; returns it."""
    if all_finite(values):
        return values
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"{who}: {what} has {bad} non-finite entries (nan or inf) of {values.numel()}"
            + (f"; {hint}" if hint else "")
        )
    return values


@dataclass(frozen=True)
class ExampleLoss:
    """A loss_fn held to the contract: ``self(outputs [N, ...], targets [N, ...])`` → [N].

    reduction: 'none' (loss_fn returns [N] itself), 'mean' or 'sum' (loss_fn reduces; it is
    evaluated one example at a time, which gives ℓ_i either way)."""

    loss_fn: Callable
    reduction: str

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.reduction == "none":
            return self.loss_fn(outputs, targets)
        one = lambda o, t: self.loss_fn(o.unsqueeze(0), t.unsqueeze(0)).reshape(())  # noqa: E731
        return vmap(one)(outputs, targets)

    def describe(self) -> str:
        if self.reduction == "none":
            return "per-example [N]"
        return f"{self.reduction}-reduced scalar, evaluated one example at a time"


def example_loss(
    model: nn.Module,
    loss_fn,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    who: str,
    *,
    allow_reduced: bool = True,
) -> ExampleLoss:
    """Check ``loss_fn`` against the contract on a few examples' ``outputs`` (detached model
    outputs [k, ...]) and ``targets``; return it as an ExampleLoss.

    The closure check sets requires_grad on the model's parameters for a moment and puts the
    flags back before it returns."""
    if not callable(loss_fn):
        raise TypeError(
            f"{who}: loss_fn must be callable (outputs, targets) -> per-example "
            f"losses [N], got {type(loss_fn).__name__}"
        )
    outputs = outputs.detach()
    k = outputs.shape[0]
    floating = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    flags = [p.requires_grad for _, p in floating]
    for _, p in floating:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            value = loss_fn(outputs, targets)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{who}: loss_fn must return a tensor, got {type(value).__name__}")
            used = (
                torch.autograd.grad(value.sum(), [p for _, p in floating], allow_unused=True)
                if value.requires_grad
                else [None] * len(floating)
            )
    finally:  # the flags are the user's: back at once, not only when the call ends
        for (_, p), flag in zip(floating, flags):
            p.requires_grad_(flag)
    names = [n for (n, _), g in zip(floating, used) if g is not None]
    if names:
        raise ValueError(
            f"{who}: loss_fn depends on the model's parameters directly ({names[:4]}"
            f"{' ...' if len(names) > 4 else ''}), not only through its outputs — e.g. a "
            "regulariser over model.parameters() written into the loss. hessext "
            "differentiates working copies of the parameters, so that term would be "
            "silently dropped. Remove it from loss_fn and pass it as regularizer= "
            "(hessext.regularizers.L2(c) for (c/2)·‖θ‖², L2.from_weight_decay(λ, n) for "
            "the toolbox's (λ/2n)·‖θ‖², or hessext.regularizers.Penalty(R) for any R(θ))"
        )
    value = value.detach()
    if value.shape == (k,):
        return ExampleLoss(loss_fn, "none")
    if value.dim() != 0:
        raise ValueError(
            f"{who}: loss_fn must return one loss per example, per-example losses of shape [N] "
            "(reduction='none', "
            "summed over any output axes, e.g. lambda out, y: F.mse_loss(out, y, "
            f"reduction='none').sum(1)); on {k} examples it returned shape {tuple(value.shape)}"
        )
    if not allow_reduced:
        raise ValueError(
            f"{who}: loss_fn must return one loss per example, shape [{k}] (e.g. "
            "nn.CrossEntropyLoss(reduction='none')), got a scalar: per-sample "
            "gradients of a reduced loss are ambiguous (∇ℓ_i or ∇ℓ_i/N)"
        )
    with torch.no_grad():
        each = ExampleLoss(loss_fn, "mean")(outputs, targets)
    total = each.sum()
    scale = max(float(total.abs()), float(value.abs()), 1e-30)
    tol = 1e-5 if value.dtype == torch.float32 else 1e-10
    if abs(float(value) - float(total) / k) <= tol * scale:
        return ExampleLoss(loss_fn, "mean")
    if abs(float(value) - float(total)) <= tol * scale:
        return ExampleLoss(loss_fn, "sum")
    raise ValueError(
        f"{who}: loss_fn returned a scalar that is neither the mean nor the sum of "
        f"its per-example values (on {k} examples: {float(value):.6g}, per-example "
        f"sum {float(total):.6g}); return per-example losses [N] instead "
        "(reduction='none')"
    )
