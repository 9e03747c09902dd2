"""Strips of the generalised Gauss-Newton matrix (1/n) Σ_i J_iᵀ Λ_i J_i from per-example
factors: with Λ_i = Σ_k s_k b_ik b_ikᵀ (s = ±1, from its eigendecomposition) the rows
f_ik = J_iᵀ b_ik give GGN = (1/n) Σ s_k f fᵀ, and a strip is F[:, 0:j1]ᵀ F[:, j0:j1]: a
matrix product with the factor count as inner dimension, computed at the model's precision and
added into the float64 strip by hessext.ops.gemm_accumulate (a symmetric rank-k update).

``GGNFiller`` takes the per-example Jacobians from torch.func; subclasses supply their own
(``_jacobian``), e.g. the piecewise-linear CNN's from its layer inputs.
"""

from __future__ import annotations

import torch
from torch.func import jacrev

from hessext import ops
from hessext._internal.contract import NOT_FINITE_HINT, check_finite_result
from hessext._internal.per_example import Batched, over_examples
from hessext.curvature.problem import Problem, output_loss_derivatives, saved_bytes_per_example, split_rows

__all__ = ["GGNFiller"]


class GGNFiller:
    """Strips of (1/n) Σ_i J_iᵀ Λ_i J_i from per-example factors (a symmetric rank-k update)."""

    # fill() adds into the strip: the driver hands it zeros
    overwrites = False

    def __init__(self, prob: Problem, batches, n_total: int, budget: int, strip_width: int):
        self.prob, self.n = prob, n_total
        self.batched = Batched()  # vmapped Jacobians, or one example at a time (e.g. nn.LSTM)
        P, item = prob.num_params, prob.theta.element_size()
        x0, _ = batches[0] if batches else prob.batches[0]
        with torch.no_grad():
            C = prob.forward(prob.theta, x0[:1]).numel()
        self.C = C
        # per example, in [C, P] factor rows: a chunk being computed holds its Jacobian, its
        # factors and the copy of the kept rows, and computing the Jacobian holds what
        # _jacobian_bytes_per_example says; without the cache, the previous chunk's factors are
        # still held too, and the allocator about one more (measured: 4.6-4.7 at the peak)
        factor = C * P * item
        jac = self._jacobian_bytes_per_example(prob, C)
        total_rows = sum(x.shape[0] for x, _ in batches)
        rows = max(1, int(budget // (3 * factor + jac)))
        # the factors of all examples are kept across strips when they fit in the budget
        self.cached = total_rows * factor + rows * (2 * factor + jac) <= budget
        if not self.cached:
            rows = max(1, int(budget // (5 * factor + jac)))
        self.batches = split_rows(batches, rows)
        rows = max([x.shape[0] for x, _ in self.batches], default=0)
        # a float32 product goes into the float64 strip in row blocks of at most 2**21 entries
        gemm = 0 if item == 8 else 4 << 21
        if self.cached:
            self.workspace_bytes = total_rows * factor + max(rows * (2 * factor + jac), gemm)
        else:
            self.workspace_bytes = rows * (5 * factor + jac) + gemm
        self.cache: list = []

    def _jacobian_bytes_per_example(self, prob: Problem, C: int) -> int:
        """What torch.func's vmap(jacrev) holds per example beside the Jacobian: the forward's
        saved tensors once per output coordinate (a vmapped backward over C basis vectors)."""
        return int(C * saved_bytes_per_example(prob))

    def prepare(self, H) -> None:
        """Compute and keep the factors when they are cached across strips."""
        if self.cached:
            self.cache = [self._factors(x, y) for x, y in self.batches]

    def _jacobian(self, x):
        """Per-example Jacobians of the flattened outputs [N, C, P] at the model precision."""
        prob = self.prob

        def f_one(th, xi):
            return prob.forward(th, xi.unsqueeze(0)).reshape(-1)

        return over_examples(jacrev(f_one), (None, 0), prob.theta, x, state=self.batched)

    def _factors(self, x, y):
        """(F_plus [k+, P], F_minus [k-, P]) at the model precision with Σ_i J_iᵀΛ_iJ_i = F₊ᵀF₊ − F₋ᵀF₋."""
        prob, theta = self.prob, self.prob.theta
        N = x.shape[0]
        J = self._jacobian(x)  # [N, C, P]
        with torch.no_grad():
            out = prob.forward(theta, x)
        _, Lam = output_loss_derivatives(prob, out, y)
        check_finite_result(
            Lam, prob.who, "the loss's second derivative in the model's outputs", NOT_FINITE_HINT
        )
        w, U = torch.linalg.eigh(Lam)  # Λ_i = U diag(w) Uᵀ
        scale = w.abs().amax(1, keepdim=True).clamp_min(1e-300)
        Bm = U * w.abs().sqrt().unsqueeze(1)  # [N, C, K]: columns b_ik
        F = torch.einsum("nck,ncp->nkp", Bm.to(J.dtype), J)  # [N, K, P]
        keep_pos = (w > 1e-14 * scale).reshape(-1)
        keep_neg = (w < -1e-14 * scale).reshape(-1)
        F = F.reshape(N * self.C, -1)
        return F[keep_pos].contiguous(), (F[keep_neg].contiguous() if bool(keep_neg.any()) else None)

    def fill(self, acc: torch.Tensor, j0: int, j1: int) -> None:
        chunks = iter(self.cache) if self.cached else (self._factors(x, y) for x, y in self.batches)
        for Fp, Fm in chunks:
            ops.gemm_accumulate(acc, Fp[:, :j1], Fp[:, j0:j1], 1.0 / self.n)
            if Fm is not None:
                ops.gemm_accumulate(acc, Fm[:, :j1], Fm[:, j0:j1], -1.0 / self.n)
