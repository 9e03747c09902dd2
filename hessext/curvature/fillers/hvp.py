"""Strips of the exact loss Hessian from batched Hessian-vector products: the general path,
for any model torch.func can differentiate twice (and the reference of the structured ones).

Reverse-over-reverse: one forward+backward per mini-batch and strip, then the backward of the
gradient is vmapped over the strip's unit vectors (measured here faster than
forward-over-reverse, and without forward-mode's first-call warm-up).
"""

from __future__ import annotations

import torch
from torch.func import grad, vjp, vmap

from hessext.curvature.problem import Problem, split_rows

__all__ = ["HVPFiller"]


def _saved_bytes_per_example(prob: Problem) -> float:
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


class HVPFiller:
    """Columns j0:j1 of the loss Hessian from batched Hessian-vector products."""

    def __init__(self, prob: Problem, batches, n_total: int, budget: int, *, split: bool = True):
        self.prob, self.n = prob, n_total
        per_example = _saved_bytes_per_example(prob)
        # a vmapped column of the double backward keeps ~4 copies of the saved activations
        # plus a few P-vectors
        per_col_row = 4.0 * per_example
        max_rows = max(x.shape[0] for x, _ in batches)
        rows = max(1, min(max_rows, int(budget / (per_col_row * 4))))
        # split=False: examples that interact (batch statistics) keep their mini-batches whole
        self.batches = split_rows(batches, rows) if split else list(batches)
        rows = max(x.shape[0] for x, _ in self.batches)
        P = prob.num_params
        self.cols = int(max(1, min(P, budget / (per_col_row * rows + 6 * P * prob.theta.element_size()))))

    def fill(self, acc: torch.Tensor, j0: int, j1: int) -> None:
        P, dtype, dev = self.prob.num_params, self.prob.dtype, self.prob.device
        prob = self.prob
        for x, y in self.batches:

            def batch_loss(th, x=x, y=y):
                return prob.batch_loss_sum(th, x, y)

            hvp = vjp(grad(batch_loss), prob.theta)[1]
            for c0 in range(j0, j1, self.cols):
                c1 = min(j1, c0 + self.cols)
                V = torch.zeros(c1 - c0, P, dtype=dtype, device=dev)
                V[:, c0:c1].diagonal().fill_(1.0)
                (cols,) = vmap(hvp)(V)  # [c, P] = H_batch[:, c0:c1]ᵀ
                acc[:, c0 - j0 : c1 - j0].add_(cols[:, :j1].T, alpha=1.0 / self.n)
