"""The layer-chain protocol: how a model tells the structured curvature paths what it computes.

The closed-form paths (hessext/curvature/fillers/) apply only to models whose forward is a
plain chain of modules, f(x) = m_K(… m_2(m_1(x))). An ``nn.Sequential`` with the stock forward
is one (nested ones are expanded). Any other model may say so by defining

    def layer_chain(self) -> list[nn.Module]:   # the modules its forward applies, in order

(e.g. hessext.models.SSHCNN). The engine never lists models by name. A chain is a claim, and a
claim is checked: the paths that use it compare its output with the model's own on an example
and fall back to the general path when they differ. ``GlobalMean`` is the chain module for a
global average pool written as ``h.mean(dim=(2, 3))``.
"""

from __future__ import annotations

from torch import nn

__all__ = ["GlobalMean", "layer_chain"]


class GlobalMean(nn.Module):
    """The mean over all spatial dimensions, [N, C, *S] → [N, C] (``h.mean(dim=(2, …))``)."""

    def forward(self, h):
        return h.mean(dim=tuple(range(2, h.dim())))


def layer_chain(model: nn.Module) -> list[nn.Module] | None:
    """The modules ``model``'s forward applies, in order (nested nn.Sequential expanded), or
    None when the model does not declare a chain."""
    if isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward:
        mods = list(model)
    elif callable(declared := getattr(model, "layer_chain", None)):
        mods = list(declared())
    else:
        return None
    out: list[nn.Module] = []
    for m in mods:
        if isinstance(m, nn.Sequential):
            inner = layer_chain(m)
            if inner is None:
                return None
            out += inner
        else:
            out.append(m)
    return out
