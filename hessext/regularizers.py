"""Regularisers R(θ) added to the mean training loss L(θ) = (1/n) Σ_i ℓ(z_i; θ) + R(θ).

Every method that needs per-example gradients "with the regulariser" adds ∇R(θ) to each row
(the toolbox convention: g_z = ∇ℓ(z; θ) + ∇R(θ)), and every Hessian adds ∇²R(θ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class L2:
    """R(θ) = (coefficient / 2) ‖θ‖² over the parameters the method differentiates.

    The Hessian-based toolbox and its seeds use R = (λ / 2n) ‖θ‖², i.e. ``L2(λ / n)``
    (``L2.from_weight_decay(λ, n)``): its gradient (λ/n)θ is added to every per-example gradient
    and its Hessian is (λ/n)·I.
    """

    coefficient: float

    def __post_init__(self):
        if not (self.coefficient >= 0 and self.coefficient < float("inf")):
            raise ValueError(f"L2: coefficient must be finite and >= 0, got {self.coefficient}")

    @classmethod
    def from_weight_decay(cls, lam: float, n: int) -> L2:
        """The toolbox convention R = (λ / 2n)‖θ‖² for n training examples."""
        if n <= 0:
            raise ValueError(f"L2.from_weight_decay: n must be positive, got {n}")
        return cls(lam / n)

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        """R(θ) for flat parameters θ: [P] → scalar."""
        return 0.5 * self.coefficient * theta.pow(2).sum()

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """∇R(θ): [P] → [P]."""
        return self.coefficient * theta

    def hessian_diagonal(self, theta: torch.Tensor) -> torch.Tensor:
        """∇²R is diagonal for L2: [P] → [P] (all equal to the coefficient)."""
        return torch.full_like(theta, self.coefficient)


class Penalty:
    """Any twice-differentiable penalty R(θ) of the flat parameter vector θ [P] (in
    named_parameters() order over the parameters a method differentiates), e.g.
    ``Penalty(lambda theta: 1e-3 * theta.abs().pow(3).sum())``. Its gradient and Hessian come
    from torch.func; use L2 where it applies (its Hessian is a diagonal)."""

    def __init__(self, fn, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"Penalty: fn must be callable theta -> scalar, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def __repr__(self) -> str:
        return f"Penalty({self.name})"

    def value(self, theta: torch.Tensor) -> torch.Tensor:
        """R(θ): [P] → scalar."""
        out = self.fn(theta)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise ValueError(f"Penalty: R(theta) must return a scalar tensor, got {out!r}")
        return out.reshape(())

    def grad(self, theta: torch.Tensor) -> torch.Tensor:
        """∇R(θ): [P] → [P]."""
        return torch.func.grad(self.value)(theta)
