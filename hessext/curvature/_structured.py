"""Exact Hessian = GGN + residual, with the residual in closed form for piecewise-linear MLPs.

    H = (1/n) Σ_i J_iᵀ Λ_i J_i  +  ∇²_θ S(θ),     S(θ) = (1/n) Σ_i r_iᵀ f(x_i; θ),  r_i = ∂ℓ_i/∂f  (held fixed)

For an nn.Sequential of Linear layers and piecewise-linear elementwise activations (ReLU,
LeakyReLU, Identity; Dropout and Flatten are inert in eval mode) every second derivative of the
activations vanishes, so ∇²S comes only from the bilinear z_m = W_m a_{m-1}: with the adjoint
δ_m,i = ∂(r_iᵀ f_i)/∂z_m (which does not depend on θ_{<m} once the ReLU masks are fixed),

    ∂²S / ∂W_m[s, t] ∂θ_{<m} = (1/n) Σ_i δ_m,i[s] · ∂a_{m-1,i}[t] / ∂θ_{<m}

and it is zero inside each layer's own block and for the biases of the later layer: the residual
lives in the blocks between layers (METHODS.md §2). Each such block is one contraction over the
examples (a matrix product with the example count as inner dimension), so the exact Hessian
costs little more than the GGN's rank-k update.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

_PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.Flatten)


def supports(prob) -> bool:
    """Whether the closed-form residual applies: an nn.Sequential of Linear layers and
    piecewise-linear elementwise modules, differentiated in all its parameters, 2-D inputs."""
    model = prob.model
    if not isinstance(model, nn.Sequential):
        return False
    if any(not isinstance(m, (nn.Linear,) + _PIECEWISE_LINEAR) for m in model):
        return False
    if any(isinstance(m, nn.Flatten) for m in model) or prob.batches[0][0].dim() != 2:
        return False
    all_names = [n for n, _ in model.named_parameters()]
    return prob.names == all_names and len(prob.others) == 0


class ResidualBlocks:
    """The upper-triangular residual blocks C_mᵀ = ∂²S/∂θ_{<m}∂W_m in float64, one per Linear
    layer m > 0, computed over the given mini-batches (one pass over the data)."""

    def __init__(self, prob, batches, n_total, r_of, budget):
        self.prob = prob
        model = prob.model
        layers = [(i, m) for i, m in enumerate(model) if isinstance(m, nn.Linear)]
        offsets, o = {}, 0
        for i, m in layers:
            offsets[i] = o
            o += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        self.layers, self.offsets = layers, offsets
        self.blocks = {}     # layer index -> float64 [P_<m, out*in] (rows θ_<m, cols W_m row-major)
        theta = prob.theta
        for (idx, lin) in layers[1:]:
            o_m = offsets[idx]
            self.blocks[idx] = torch.zeros(o_m, lin.weight.numel(), dtype=torch.float64, device=theta.device)
        if len(layers) < 2:
            return
        item = theta.element_size()
        for x, y in batches:
            r = r_of(x, y)                                             # [N, C] = ∂ℓ_i/∂f_i
            deltas, inputs = self._adjoints(x, r)
            for k in range(1, len(layers)):
                idx, lin = layers[k]
                prev_idx, prev = layers[k - 1]
                block = self.blocks[idx]                               # [o_m, out_m * in_m]
                o_prev = offsets[prev_idx]
                d = deltas[idx]                                        # [N, out_m]
                z_prev = deltas["z"][prev_idx]                         # [N, in_m]: pre-activation
                slope = self._elementwise_slope(prev_idx, idx, z_prev)  # σ' of the modules between
                a_in = inputs[prev_idx]                                # [N, in_prev]
                if prev.bias is not None:
                    a_in = torch.cat([a_in, torch.ones_like(a_in[:, :1])], 1)
                # adjacent layer, closed form: ∂a_{m-1}[t]/∂W_prev[p, q] = σ'[t] [t = p] ã[q]
                T = torch.einsum("it,iq,is->tqs", slope, a_in, d.to(slope.dtype)).to(torch.float64) / n_total
                out_p, in_p = prev.weight.shape
                in_m = lin.in_features
                t_idx = torch.arange(out_p, device=block.device)
                q_idx = torch.arange(in_p, device=block.device)
                s_idx = torch.arange(lin.out_features, device=block.device)
                rows_w = o_prev + t_idx[:, None, None] * in_p + q_idx[None, :, None]
                cols = s_idx[None, None, :] * in_m + t_idx[:, None, None]
                block.index_put_((rows_w.expand(out_p, in_p, len(s_idx)), cols.expand(out_p, in_p, len(s_idx))),
                                 T[:, :in_p, :], accumulate=True)
                if prev.bias is not None:
                    rows_b = o_prev + prev.weight.numel() + t_idx[:, None]
                    block.index_put_((rows_b.expand(out_p, len(s_idx)), cols[:, 0, :]), T[:, in_p, :],
                                     accumulate=True)
                if o_prev == 0:
                    continue
                # earlier layers: ∂a_{m-1}/∂θ_<prev = σ' ⊙ W_prev ∂a_{prev-1}/∂θ_<prev (per example)
                W_prev = prob.unflatten(theta)[f"{prev_idx}.weight"]
                rows = max(1, int(budget // (3 * (in_p + out_p) * o_prev * item)))
                for s0 in range(0, x.shape[0], rows):
                    J = self._prefix_jacobian(prev_idx, x[s0:s0 + rows], o_prev)   # [N, in_p, P_<prev]
                    J = slope[s0:s0 + rows, :, None] * torch.matmul(W_prev, J)     # [N, out_p, P_<prev]
                    # C_mᵀ[p, (s, t)] = (1/n) Σ_i J_i[t, p] δ_i[s]: a product over the examples
                    blk = torch.einsum("itp,is->pst", J, d[s0:s0 + rows].to(J.dtype))
                    block[:o_prev].add_(blk.reshape(o_prev, -1), alpha=1.0 / n_total)

    def _elementwise_slope(self, prev_idx, idx, z):
        """Derivative of the elementwise modules between Linear layers prev_idx and idx at z."""
        chain = self.prob.model[prev_idx + 1:idx]
        with torch.enable_grad():
            u = z.detach().requires_grad_(True)
            out = chain(u)
            if out is u:
                return torch.ones_like(z)
            # elementwise: d/du_j Σ_k σ(u_k) = σ'(u_j)
            slope, = torch.autograd.grad(out.sum(), u)
        return slope

    def _adjoints(self, x, r):
        """δ_m = ∂(Σ_i r_iᵀ f_i)/∂z_m for every Linear layer m (z_m its output), [N, out_m]."""
        prob = self.prob
        zs, inputs = {}, {}
        with torch.enable_grad():
            params = prob.unflatten(prob.theta.detach().requires_grad_(True))
            h = x.detach()
            for i, mod in enumerate(prob.model):
                if isinstance(mod, nn.Linear):
                    inputs[i] = h.detach()
                    w = params[f"{i}.weight"]
                    b = params.get(f"{i}.bias")
                    h = torch.nn.functional.linear(h, w, b)
                    h.retain_grad()
                    zs[i] = h
                else:
                    h = mod(h)
            (h * r.to(h.dtype)).sum().backward()
        deltas = {i: z.grad.detach() for i, z in zs.items()}
        deltas["z"] = {i: z.detach() for i, z in zs.items()}
        return deltas, inputs


    def _prefix_jacobian(self, idx, x, o_m):
        """Per-example Jacobian of the input of layer idx w.r.t. the parameters before it:
        [N, in_idx, P_<idx]."""
        prob = self.prob
        prefix = prob.model[:idx]
        names = [n for n, _ in prefix.named_parameters()]
        shapes = [p.shape for _, p in prefix.named_parameters()]

        def a_of(th, xi):
            d, o = {}, 0
            for n_, s in zip(names, shapes):
                d[n_] = th[o:o + s.numel()].view(s)
                o += s.numel()
            return functional_call(prefix, d, (xi.unsqueeze(0),)).squeeze(0)

        return vmap(jacrev(a_of), in_dims=(None, 0))(prob.theta[:o_m], x)

    def add_to_strip(self, acc, j0, j1):
        """acc (= H[0:j1, j0:j1]) += the residual's entries there: the blocks C_mᵀ (rows θ_<m,
        columns W_m, above the diagonal) and, inside the diagonal tile H[j0:j1, j0:j1], their
        mirror images C_m below it."""
        for (idx, lin) in self.layers[1:]:
            o_m, w_n = self.offsets[idx], lin.weight.numel()
            block = self.blocks[idx]                                   # [o_m, w_n]
            c0, c1 = max(j0, o_m), min(j1, o_m + w_n)
            if c1 > c0:
                rows = min(o_m, j1)
                acc[:rows, c0 - j0:c1 - j0] += block[:rows, c0 - o_m:c1 - o_m]
            # mirror part: rows W_m ∩ [j0, j1), columns θ_<m ∩ [j0, j1)
            r0, r1 = max(j0, o_m), min(j1, o_m + w_n)
            k0, k1 = j0, min(j1, o_m)
            if r1 > r0 and k1 > k0:
                acc[r0:r1, k0 - j0:k1 - j0] += block[k0:k1, r0 - o_m:r1 - o_m].T
