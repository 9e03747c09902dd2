"""The training-loss problem in functional form: flat parameters θ [P], a model f(θ, x), per-example
losses ℓ(f, y) [N], mini-batches. Everything the assembly and the operator differentiate goes
through here, on copies of the parameters (the user's model is never written)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, vmap

from hessext._model_guard import flat_parameters


def _is_pair(data) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


def materialize_batches(data, who: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) or an iterable of such pairs → list of pairs (iterated once, so
    generators and DataLoaders both work; the assembly passes over the data several times)."""
    if _is_pair(data):
        batches = [tuple(data)]
    else:
        try:
            batches = [tuple(b) for b in data]
        except TypeError:
            raise TypeError(f"{who}: data must be an (inputs, targets) pair of tensors or an iterable "
                            f"of such pairs, got {type(data).__name__}") from None
        for i, b in enumerate(batches):
            if not (len(b) == 2 and all(isinstance(t, torch.Tensor) for t in b)):
                raise TypeError(f"{who}: mini-batch {i} is not an (inputs, targets) pair of tensors")
    batches = [(x, y) for x, y in batches if x.shape[0] > 0]
    for i, (x, y) in enumerate(batches):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{who}: mini-batch {i} has {x.shape[0]} inputs but {y.shape[0]} targets")
    if not batches:
        raise ValueError(f"{who}: data holds no examples")
    return batches


@dataclass
class Problem:
    model: nn.Module
    loss_fn: object
    names: list[str]
    shapes: list[torch.Size]
    theta: torch.Tensor                    # [P] at the compute dtype, detached copy
    others: dict                           # the rest of the parameters and the buffers, detached
    batches: list                          # [(x, y)] at the compute dtype / device
    dtype: torch.dtype
    regularizer: object = None
    loss_reduces: bool = False             # loss_fn returns a scalar: evaluated per example
    n: int = 0
    info: dict = field(default_factory=dict)

    @property
    def num_params(self) -> int:
        return self.theta.numel()

    @property
    def device(self):
        return self.theta.device

    def unflatten(self, theta: torch.Tensor) -> dict:
        out, offset = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = shape.numel()
            out[name] = theta[offset:offset + k].view(shape)
            offset += k
        return out

    def forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**self.others, **self.unflatten(theta)}, (x,))

    def per_example_losses(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ℓ_i [N]."""
        if self.loss_reduces:
            one = lambda o, t: self.loss_fn(o.unsqueeze(0), t.unsqueeze(0)).reshape(())
            return vmap(one)(outputs, y)
        return self.loss_fn(outputs, y)

    def example_loss(self, o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ℓ(f, y) of ONE example (o: that example's output, no batch axis) → scalar."""
        return self.loss_fn(o.unsqueeze(0), t.unsqueeze(0)).reshape(())

    def batch_loss_sum(self, theta, x, y) -> torch.Tensor:
        return self.per_example_losses(self.forward(theta, x), y).sum()


def build_problem(model, loss_fn, data, *, params=None, regularizer=None, dtype=torch.float64,
                  who: str = "hessian") -> Problem:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"{who}: loss_fn must be callable (outputs, targets) -> per-example losses [N]")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{who}: dtype must be torch.float32 or torch.float64, got {dtype}")
    if regularizer is not None and not hasattr(regularizer, "value"):
        raise TypeError(f"{who}: regularizer must provide value(theta) (e.g. hessext.regularizers.L2), "
                        f"got {type(regularizer).__name__}")
    names, tensors = flat_parameters(model, params)
    chosen = set(names)
    device = tensors[0].device
    theta = torch.cat([t.detach().reshape(-1) for t in tensors]).to(dtype)
    others = {}
    for n_, p in model.named_parameters():
        if n_ not in chosen:
            others[n_] = p.detach().to(dtype) if p.is_floating_point() else p.detach()
    for n_, b in model.named_buffers():
        others[n_] = b.detach().to(dtype) if b.is_floating_point() else b.detach()
    batches = []
    for x, y in materialize_batches(data, who):
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
        y = y.to(device=device, dtype=dtype) if y.is_floating_point() else y.to(device)
        batches.append((x, y))
    prob = Problem(model=model, loss_fn=loss_fn, names=names, shapes=[t.shape for t in tensors],
                   theta=theta, others=others, batches=batches, dtype=dtype, regularizer=regularizer)
    prob.n = sum(x.shape[0] for x, _ in batches)
    # What does loss_fn return? Per-example [N] is the contract; a scalar means a reducing loss
    # (mean or sum): evaluated on one example at a time it is that example's loss either way.
    # Two examples tell: a forward pass over the whole first batch here cost as much memory as
    # the assembly itself (109 MB of im2col for the toolbox CNN's 1,000 inputs in float64).
    x0, y0 = (t[:2] for t in batches[0])
    with torch.no_grad():
        probe = loss_fn(prob.forward(theta, x0), y0)
    if not isinstance(probe, torch.Tensor):
        raise TypeError(f"{who}: loss_fn must return a tensor, got {type(probe).__name__}")
    if probe.dim() == 0:
        prob.loss_reduces = True
    elif probe.shape != (x0.shape[0],):
        raise ValueError(
            f"{who}: loss_fn must return per-example losses of shape [N] (reduction='none', "
            f"summed over any output axes, e.g. lambda out, y: F.mse_loss(out, y, reduction='none').sum(1)) "
            f"or a mean/sum-reduced scalar; on the first {x0.shape[0]} examples it returned shape "
            f"{tuple(probe.shape)}")
    prob.info = {
        "loss": getattr(loss_fn, "__name__", None) or type(loss_fn).__name__,
        "loss_returns": "scalar (reduced; evaluated per example)" if prob.loss_reduces else "per-example [N]",
        "regularizer": repr(regularizer) if regularizer is not None else None,
        "dtype": str(dtype).replace("torch.", ""),
        "n": prob.n,
        "params": list(names),
        "num_batches": len(batches),
    }
    return prob


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
