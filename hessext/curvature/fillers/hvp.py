"""Strips of the exact loss Hessian from batched Hessian-vector products: the general path,
for any model torch.func can differentiate twice (and the reference of the structured ones).

Reverse-over-reverse: one forward+backward per mini-batch and strip, then the backward of the
gradient is vmapped over the strip's unit vectors (measured here faster than
forward-over-reverse, and without forward-mode's first-call warm-up).
"""

from __future__ import annotations

import torch
from torch.func import grad, vjp, vmap

from hessext.curvature.problem import Problem, saved_bytes_per_example, split_rows

__all__ = ["HVPFiller"]


class HVPFiller:
    """Columns j0:j1 of the loss Hessian from batched Hessian-vector products."""

    # fill() adds into the strip: the driver hands it zeros
    overwrites = False

    def __init__(
        self, prob: Problem, batches, n_total: int, budget: int, strip_width: int, *, split: bool = True
    ):
        self.prob, self.n = prob, n_total
        per_example = saved_bytes_per_example(prob)
        P, item = prob.num_params, prob.theta.element_size()
        # a vmapped column of the double backward holds about two copies of the saved activations
        # per example and three P-vectors (its unit vector, its result, a gradient; measured)
        per_col_row = 2.0 * per_example
        max_rows = max([x.shape[0] for x, _ in batches], default=1)
        rows = max(1, min(max_rows, int(budget / (per_col_row * 8))))
        # split=False: examples that interact (batch statistics) keep their mini-batches whole
        self.batches = split_rows(batches, rows) if split else list(batches)
        rows = max([x.shape[0] for x, _ in self.batches], default=1)
        per_col = per_col_row * rows + 3 * P * item
        self.cols = int(max(1, min(P, strip_width, budget / per_col)))
        self.workspace_bytes = int(self.cols * per_col)

    def prepare(self, H) -> None:
        """Nothing is computed ahead of the strips."""

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
