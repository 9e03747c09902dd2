"""The training-loss problem in functional form: flat parameters θ [P], a model f(θ, x),
per-example losses ℓ(f, y) [N], mini-batches. Everything the assembly and the operator
differentiate goes through here, on working copies of the parameters (the user's model is
never written, and later changes to it do not reach a Problem).

    L(θ) = (1/n) Σ_i ℓ(f(x_i; θ), y_i) + R(θ)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from hessext._internal.contract import (
    Batch,
    ExampleLoss,
    as_batches,
    check_batch_output,
    check_examples_independent,
    check_finite_parameters,
    example_loss,
    forward_or_explain,
    interaction,
)
from hessext._internal.guard import batch_statistics, check_model
from hessext._internal.params import flat_parameters, unflatten_params, values_fingerprint, working_copy

__all__ = [
    "Problem",
    "build_problem",
    "split_rows",
    "regularizer_hessian_add",
    "output_loss_derivatives",
    "saved_bytes_per_example",
]


@dataclass
class Problem:
    """The functional form of one training objective (see the module docstring)."""

    model: nn.Module
    loss: ExampleLoss  # the user's loss_fn held to the contract
    names: list[str]
    shapes: list[torch.Size]
    theta: torch.Tensor  # [P] at the compute dtype, a copy
    others: dict  # the rest of the parameters and the buffers, copies
    batches: list[Batch]  # [(x, y)] at the compute dtype / device
    dtype: torch.dtype
    regularizer: Any = None  # hessext.regularizers.L2, Penalty, or anything with value(θ)
    n: int = 0
    info: dict = field(default_factory=dict)
    clone_inputs: bool = False  # the model writes its input in place: every pass gets a copy
    # why the examples of a batch interact (None: they do not); then only the Hessian of the
    # mean loss over the mini-batches as given is defined, and the batches must not be split
    interacting: str | None = None
    who: str = "hessian"  # the public function it serves, for its error messages

    @property
    def num_params(self) -> int:
        return self.theta.numel()

    @property
    def device(self):
        return self.theta.device

    def unflatten(self, theta: torch.Tensor) -> dict:
        return unflatten_params(theta, self.names, self.shapes)

    def forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x.clone() if self.clone_inputs else x
        # scaled_dot_product_attention's fused kernels (flash, memory-efficient) have no double
        # backward; its math kernel has, and gives the same values to rounding
        with sdpa_kernel(SDPBackend.MATH):
            return functional_call(self.model, {**self.others, **self.unflatten(theta)}, (x,))

    def per_example_losses(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ℓ_i [N]."""
        return self.loss(outputs, y)

    def batch_loss_sum(self, theta, x, y) -> torch.Tensor:
        return self.per_example_losses(self.forward(theta, x), y).sum()


def build_problem(
    model,
    loss_fn,
    data,
    *,
    params=None,
    regularizer=None,
    dtype=torch.float64,
    who: str = "hessian",
    copy_data: bool = False,
    examples_may_interact: bool = False,
) -> Problem:
    """The Problem of ``model`` on ``data`` (inside ``preserved(model)``). ``copy_data``: copy
    the mini-batches even where no dtype conversion copies them (for objects that outlive the
    call and promise a snapshot, like HessianOperator). ``examples_may_interact``: accept a
    model through which examples interact (Problem.interacting says why), for the callers whose
    result is defined for it (the exact Hessian over the mini-batches as given); refused
    otherwise."""
    check_model(model, who, examples_may_interact=examples_may_interact)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{who}: dtype must be torch.float32 or torch.float64, got {dtype}")
    if regularizer is not None and not callable(getattr(regularizer, "value", None)):
        raise TypeError(
            f"{who}: regularizer must provide value(theta) (e.g. "
            f"hessext.regularizers.L2), got {type(regularizer).__name__}"
        )
    names, tensors = flat_parameters(model, params)
    check_finite_parameters(model, who)
    chosen = set(names)
    device = tensors[0].device
    theta = torch.cat([t.detach().reshape(-1) for t in tensors]).to(dtype)
    # clones: a Problem is a snapshot (in-place training of the model must not reach it)
    others = {k: working_copy(p, dtype).clone() for k, p in model.named_parameters() if k not in chosen}
    others.update({k: working_copy(b, dtype).clone() for k, b in model.named_buffers()})
    batches = []
    for x, y in as_batches(data, who, model=model):
        x, y = working_copy(x, dtype, device), working_copy(y, dtype, device)
        if copy_data:
            x, y = x.clone(), y.clone()
        batches.append((x, y))
    n = sum(x.shape[0] for x, _ in batches)
    # Two examples tell what loss_fn returns: a forward pass over the whole first batch here cost
    # as much memory as the assembly itself (109 MB of im2col for the toolbox CNN's 1,000 inputs
    # in float64).
    # (on copies: a model that writes its input in place must not write the caller's data, and
    # is then given a copy on every pass; one example alone must give its row of the batch's
    # output: examples must not interact)
    x0, y0 = (t[:2] for t in batches[0])
    state = {**others, **unflatten_params(theta, names, [t.shape for t in tensors])}
    with torch.no_grad():
        probe = x0.clone()
        out0 = forward_or_explain(model, state, probe, who)
        check_batch_output(out0, x0.shape[0], who)
        interacting = batch_statistics(model)
        if x0.shape[0] > 1 and interacting is None:
            alone = forward_or_explain(model, state, x0[:1].clone(), who)
            if examples_may_interact:
                interacting = interaction(alone, out0[:1])
            else:
                check_examples_independent(alone, out0[:1], who)
    loss = example_loss(model, loss_fn, out0, y0, who)
    info = {
        "loss": getattr(loss_fn, "__name__", None) or type(loss_fn).__name__,
        "loss_returns": loss.describe(),
        "regularizer": repr(regularizer) if regularizer is not None else None,
        "dtype": str(dtype).replace("torch.", ""),
        "n": n,
        "params": list(names),
        "params_sha256": values_fingerprint(tensors),
        "num_batches": len(batches),
    }
    return Problem(
        model=model,
        loss=loss,
        names=names,
        shapes=[t.shape for t in tensors],
        theta=theta,
        others=others,
        batches=batches,
        dtype=dtype,
        regularizer=regularizer,
        n=n,
        info=info,
        clone_inputs=probe._version != 0,
        interacting=interacting,
        who=who,
    )


def split_rows(batches: list[Batch], max_rows: int) -> list[Batch]:
    """The mini-batches cut into pieces of at most ``max_rows`` examples (views, no copies)."""
    out = []
    for x, y in batches:
        for s in range(0, x.shape[0], max_rows):
            out.append((x[s : s + max_rows], y[s : s + max_rows]))
    return out


def output_loss_derivatives(
    prob: Problem, outputs: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r [N, C], Λ [N, C, C]) in float64: r_i = ∂ℓ_i/∂f_i and Λ_i = ∂²ℓ_i/∂f_i² (symmetrised)
    for the flattened outputs f_i of C entries.

    Each ℓ_i depends on f_i only, so the Hessian of Σ_i ℓ_i w.r.t. all outputs is block diagonal
    and C double-backward passes give every block."""
    N = outputs.shape[0]
    o64 = outputs.detach().reshape(N, -1).to(torch.float64)
    C = o64.shape[1]
    y64 = y.to(torch.float64) if y.is_floating_point() else y
    with torch.enable_grad():
        o = o64.requires_grad_(True)
        total = prob.per_example_losses(o.view(N, *outputs.shape[1:]), y64).sum()
        (g,) = torch.autograd.grad(total, o, create_graph=True)
        rows = [
            torch.autograd.grad(g[:, c].sum(), o, retain_graph=c + 1 < C, allow_unused=True)[0]
            if g.requires_grad
            else None
            for c in range(C)
        ]
    Lam = torch.stack([torch.zeros_like(o64) if r is None else r for r in rows], 1).detach()
    return g.detach(), (Lam + Lam.transpose(1, 2)) / 2


def regularizer_hessian_add(prob: Problem, acc: torch.Tensor, rows: slice, cols: slice) -> None:
    """acc += ∇²R(θ)[rows, cols] in float64 (diagonal for L2; torch.func.hessian otherwise)."""
    reg = prob.regularizer
    if reg is None:
        return
    theta64 = prob.theta.to(torch.float64)
    if hasattr(reg, "hessian_diagonal"):
        d = reg.hessian_diagonal(theta64).to(torch.float64)
        lo, hi = max(rows.start, cols.start), min(rows.stop, cols.stop)
        if hi > lo:
            k = torch.arange(lo, hi, device=acc.device)
            acc[k - rows.start, k - cols.start] += d[lo:hi]
        return
    H = torch.func.hessian(lambda t: reg.value(t))(theta64)
    acc += H[rows, cols]


def saved_bytes_per_example(prob: Problem) -> float:
    """Bytes autograd saves for one example's forward+backward (measured on the first batch)."""
    x, y = prob.batches[0]
    m = min(x.shape[0], 8)
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    theta = prob.theta.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = prob.batch_loss_sum(theta, x[:m], y[:m])
    del loss
    return max(total / m, 8.0 * 16)
