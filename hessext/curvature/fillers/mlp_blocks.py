"""Exact Hessian (or GGN) of an MLP in closed form, layer block by layer block, as matrix products.

For an nn.Sequential of Linear layers z_m = W_m a_{m-1} + b_m separated by elementwise modules
a_m = φ_m(z_m) (any twice-differentiable or piecewise-linear ones: ReLU, tanh, softplus, GELU, ...),
expanding the per-example loss ℓ to second order along a parameter direction gives (docs/methods.md §2)

    d²ℓ = Σ_m dz_mᵀ D_m dz_m + dz_Lᵀ 𝓗_L dz_L + 2 Σ_l δ_lᵀ dW_l da_{l-1}

with δ_l = ∂ℓ/∂z_l, D_m = diag(φ_m''(z_m) ⊙ ∂ℓ/∂a_m) and 𝓗_L = ∂²ℓ/∂z_L². Since dz_l = Σ_{m≤l}
M_{l,m} (dW_m ã_{m-1}) with M_{l,m} = ∂z_l/∂z_m and ã = [a, 1], the block between the parameters
of layers m ≤ l is, per example,

    H[(p,q),(j,k)] = K^{(m,l)}[p,j] ã_{m-1}[q] ã_{l-1}[k]  +  [m<l, W_l] δ_l[j] T^{(l,m)}[k,p] ã_{m-1}[q]

where K^{(m,l)} = M_{l,m}ᵀ 𝓗_l with the pre-activation Hessians 𝓗_m = D_m + M_{m+1,m}ᵀ 𝓗_{m+1}
M_{m+1,m} (one backward recursion of small [w, w] matrices per example), and T^{(l,m)} =
∂a_{l-1}/∂z_m. The first term is a Kronecker product per example, the second the bilinear weight ×
input coupling (for ReLU nets the only second-order term of the network, and it lives only in the
blocks between layers). Summed over the examples, each block is ONE matrix product with the
example count as inner dimension: ~2·n·P_m·P_l flops for the whole block, instead of P HVPs or
n·C·P² for GGN factors. The GGN is the same without D and without the bilinear term.
"""

from __future__ import annotations

import torch
from torch import nn

from hessext._internal.modules import not_stock
from hessext.curvature.problem import output_loss_derivatives, split_rows

# Modules applied elementwise (so their Jacobian is diagonal); Dropout is the identity in eval mode.
_ELEMENTWISE = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softsign,
    nn.Hardtanh,
    nn.ReLU6,
    nn.LogSigmoid,
    nn.Tanhshrink,
)


def blocker(prob) -> str | None:
    """Why the closed form does not apply to ``prob`` (None: it does). It applies to a stock
    nn.Sequential of stock nn.Linear layers and elementwise modules (exact types, no hooks, no
    replaced forward: hessext/_internal/modules.py), each layer used once and owning its
    parameters (no tied weights), differentiated in all its parameters, on 2-D inputs."""
    model = prob.model
    if not isinstance(model, nn.Sequential) or len(model) == 0:
        return "the model is not an nn.Sequential"
    why = not_stock(model, (nn.Sequential,))
    if why is not None:
        return f"the model's nn.Sequential: {why}"
    for i, m in enumerate(model):
        why = not_stock(m, (nn.Linear, *_ELEMENTWISE))
        if why is not None:
            return f"module {i} ({type(m).__name__}): {why}"
    weighted = [m for m in model if any(True for _ in m.parameters())]
    if len({id(m) for m in weighted}) != len(weighted):  # a stock activation may be reused
        return "a layer with parameters is used more than once"
    if not any(isinstance(m, nn.Linear) for m in model):
        return "the model has no Linear layer"
    if prob.batches[0][0].dim() != 2:
        return f"the inputs are not [N, features] (shape {tuple(prob.batches[0][0].shape)})"
    own = [
        f"{i}.{attr}"
        for i, m in enumerate(model)
        if isinstance(m, nn.Linear)
        for attr in ("weight", "bias")
        if m._parameters.get(attr) is not None
    ]
    if [n for n, _ in model.named_parameters()] != own:
        return "Linear layers share a parameter (tied weights)"
    if prob.names != own or len(prob.others) != 0:
        return "not all parameters are differentiated"
    return None


def supports(prob) -> bool:
    """Whether the closed form applies (``blocker(prob)`` says why not)."""
    return blocker(prob) is None


def _elementwise_derivatives(chain: nn.Sequential, z: torch.Tensor):
    """(φ(z), φ'(z), φ''(z)) of an elementwise chain: d/dz Σ φ(z) = φ'(z) and again for φ''."""
    if len(chain) == 0:
        return z, torch.ones_like(z), torch.zeros_like(z)
    with torch.enable_grad():
        u = z.detach().requires_grad_(True)
        a = chain(u.clone())  # an in-place module (nn.ReLU(inplace=True)) writes the copy
        (d1,) = torch.autograd.grad(a.sum(), u, create_graph=True)
        d2 = None
        if d1.requires_grad:  # piecewise-linear chains have no graph behind φ'
            (d2,) = torch.autograd.grad(d1.sum(), u, allow_unused=True)
    return a.detach(), d1.detach(), (torch.zeros_like(z) if d2 is None else d2.detach())


class _Group:
    """One parameter tensor: layer index (among the Linear layers), 'W' or 'b', flat offset,
    rows-per-unit (in_features for a weight, 1 for a bias)."""

    def __init__(self, layer, kind, offset, units, per_unit):
        self.layer, self.kind, self.offset = layer, kind, offset
        self.units, self.per_unit = units, per_unit
        self.size = units * per_unit


class MLPBlocks:
    """Writes column strips H[0:j1, j0:j1] of the exact Hessian (exact=True) or the GGN of the mean
    loss of a supported MLP. Per-example factors are computed once per mini-batch chunk (cached
    across strips when they fit in the budget); each strip costs one matrix product per layer
    pair, computed at the model's precision and accumulated into the float64 strip."""

    # the first chunk writes every entry of the strip (the driver need not zero it first)
    overwrites = True

    def __init__(self, prob, batches, n_total: int, budget: int, exact: bool = True):
        self.prob, self.n, self.exact = prob, n_total, exact
        model = prob.model
        idx = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
        self.linears = [model[i] for i in idx]
        # elementwise chain after each Linear layer (the last one belongs to the loss: f = φ_L(z_L))
        self.chains = [model[i + 1 : j] for i, j in zip(idx, idx[1:] + [len(model)])]
        self.head = model[: idx[0]]  # elementwise modules before the first Linear (no parameters)
        self.groups, o = [], 0
        for m, lin in enumerate(self.linears):
            self.groups.append(_Group(m, "W", o, lin.out_features, lin.in_features))
            o += lin.weight.numel()
            if lin.bias is not None:
                self.groups.append(_Group(m, "b", o, lin.out_features, 1))
                o += lin.out_features
        params = prob.unflatten(prob.theta)
        self.W = [params[f"{i}.weight"] for i in idx]
        self.b = [params.get(f"{i}.bias") for i in idx]
        item = prob.theta.element_size()
        widths = [lin.out_features for lin in self.linears]
        ins = [lin.in_features + 1 for lin in self.linears]
        L = len(widths)
        # bytes per example of the cached factors (K, T for every layer pair, activations) and of
        # the products' per-example operands (K slice, Kronecker rows); the products' outputs are
        # strip-sized, not per example
        per_ex = item * (
            sum(widths[m] * widths[l] for m in range(L) for l in range(m, L))
            + sum(widths[m] * ins[l] for m in range(L) for l in range(m + 2, L))
            + 2 * sum(ins)
            + 3 * sum(widths)
        )
        per_ex_work = per_ex + item * max(
            widths[m] * widths[l] + ins[m] * (ins[l] + widths[l]) for m in range(L) for l in range(m, L)
        )
        rows = max(1, int(budget // (2 * per_ex_work)))
        strip_bytes = 2 * prob.num_params * 1024 * item  # a strip's product outputs
        self.chunks = chunks = split_rows(batches, rows)
        total = sum(x.shape[0] for x, _ in batches)
        self.cache = (
            [self._factors(x, y) for x, y in chunks] if total * per_ex + strip_bytes <= budget else None
        )

    # ------------------------------------------------------------------ per-example factors
    def _factors(self, x, y):
        prob, L, dt = self.prob, len(self.linears), self.prob.dtype
        h = self.head(x.clone()) if len(self.head) else x  # the head may write in place: not the data
        a_in, d1, d2 = [], [], []
        for m in range(L):
            a_in.append(torch.cat([h, torch.ones_like(h[:, :1])], 1))  # ã_{m-1} [N, in+1]
            z = torch.nn.functional.linear(h, self.W[m], self.b[m])
            h, s1, s2 = _elementwise_derivatives(self.chains[m], z)
            d1.append(s1)
            d2.append(s2)
        f = h
        # loss derivatives w.r.t. the network output, in float64: r = ∂ℓ/∂f, Λ = ∂²ℓ/∂f²
        r, Lam = output_loss_derivatives(prob, f, y)
        r, Lam = r.to(dt), Lam.to(dt)  # [N, C], [N, C, C]
        # backward: δ_m = ∂ℓ/∂z_m, 𝓗_m = ∂²ℓ/∂z_m² (GGN: without the φ'' terms)
        ga = r  # ∂ℓ/∂a_L
        Hz = d1[-1].unsqueeze(2) * Lam * d1[-1].unsqueeze(1)
        deltas, Hzs = [None] * L, [None] * L
        for m in range(L - 1, -1, -1):
            if m < L - 1:
                ga = deltas[m + 1] @ self.W[m + 1]  # ∂ℓ/∂a_m
                Wt = self.W[m + 1]
                Hz = d1[m].unsqueeze(2) * (Wt.T @ Hzs[m + 1] @ Wt) * d1[m].unsqueeze(1)
            if self.exact:
                Hz = Hz + torch.diag_embed(d2[m] * ga)
            deltas[m] = d1[m] * ga
            Hzs[m] = Hz
        # K^{(m,l)} = M_{l,m}ᵀ 𝓗_l and T^{(l,m)} = ∂a_{l-1}/∂z_m for m < l, via M_{l,m} = W_l T^{(l,m)};
        # T of adjacent layers is diag(φ') and is not stored (built when used)
        K, Tt = {}, {}
        for m in range(L):
            K[m, m] = Hzs[m]
            Tlm = None  # ∂a_{l-1}/∂z_m, [N, in_l, w_m]
            for l in range(m + 1, L):
                if Tlm is None:
                    M = self.W[l] * d1[m].unsqueeze(1)  # W_l diag(φ_m')
                else:
                    Tt[l, m] = Tlm.transpose(1, 2).contiguous()  # [N, w_m, in_l]
                    M = self.W[l] @ Tlm
                K[m, l] = M.transpose(1, 2) @ Hzs[l]  # [N, w_m, w_l]
                Tlm = d1[l].unsqueeze(2) * M  # ∂a_l/∂z_m
        return {"a": a_in, "delta": deltas, "K": K, "Tt": Tt, "d1": d1}

    # ------------------------------------------------------------------ strips
    def fill(self, acc: torch.Tensor, j0: int, j1: int) -> None:
        chunks = self.cache if self.cache is not None else (self._factors(x, y) for x, y in self.chunks)
        if not self.chunks:  # a rank of a distributed assembly without examples
            acc.zero_()
        for c, fac in enumerate(chunks):
            for gc in self.groups:
                c0, c1 = max(j0, gc.offset), min(j1, gc.offset + gc.size)
                if c1 <= c0:
                    continue
                for m in range(gc.layer + 1):
                    self._block(acc, fac, m, gc, c0 - gc.offset, c1 - gc.offset, j0, j1, first=c == 0)
        # Inside the diagonal tile acc[j0:j1] the blocks of a later layer's rows against an
        # earlier layer's columns lie below the diagonal: mirror them, so the tile is complete.
        spans = self._layer_spans(j0, j1)
        for lr, (r0, r1) in spans.items():
            for lc, (k0, k1) in spans.items():
                if lr > lc:
                    acc[r0:r1, k0 - j0 : k1 - j0] = acc[k0:k1, r0 - j0 : r1 - j0].T

    def _layer_spans(self, j0, j1):
        """{layer: (start, stop)} of each layer's parameters inside [j0, j1)."""
        spans = {}
        for g in self.groups:
            s0, s1 = max(j0, g.offset), min(j1, g.offset + g.size)
            if s1 > s0:
                a, b = spans.get(g.layer, (s0, s1))
                spans[g.layer] = (min(a, s0), max(b, s1))
        return spans

    def _block(self, acc, fac, m, gc, c0, c1, j0, j1, first):
        """acc[rows of layer m's parameters (< j1), columns c0:c1 of group gc] = (first chunk) or
        += (later chunks) the block's entries (divided by n) over this chunk's examples, as matrix
        products with the example count as inner dimension. The layer-pair block, indexed
        [p, q̃, j, k] (rows: unit p of layer m and its input q̃ (the last one is the bias);
        columns: unit j of layer l and its
        input k), is

            Σ_i K_i[p, j] ã_m,i[q̃] ã_l,i[k]      = (K as [i, (p, j)])ᵀ @ (ã_m ⊗ ã_l as [i, (q̃, k)])
          + Σ_i δ_l,i[j] ã_m,i[q̃] T_i[k, p]     = (ã_m ⊗ δ_l as [i, (q̃, j)])ᵀ @ (Tᵀ as [i, (p, k)])

        so the only per-example operands built are small Kronecker rows (never [n, P_m, P_l])."""
        l, a_m = gc.layer, fac["a"][m]
        mine = [g for g in self.groups if g.layer == m and g.offset < j1]
        # rows below j1 only: in the layer's own block that is the upper triangle of the strip
        p_hi = max(min(g.units, -(-(j1 - g.offset) // g.per_unit)) for g in mine)
        N, Q = a_m.shape
        u0, u1 = c0 // gc.per_unit, (c1 - 1) // gc.per_unit + 1  # units j of the columns
        J = u1 - u0
        a_l = fac["a"][l][:, :-1] if gc.kind == "W" else a_m.new_ones(N, 1)  # [N, k]
        kk = a_l.shape[1]
        Kmat = fac["K"][m, l][:, :p_hi, u0:u1].reshape(N, p_hi * J)
        scale = 1.0 / self.n
        kron = (a_m[:, :, None] * (a_l * scale)[:, None, :]).reshape(N, Q * kk)
        S = (Kmat.T @ kron).view(p_hi, J, Q, kk).transpose(1, 2)  # [p, q̃, j, k]
        if self.exact and m < l and gc.kind == "W":
            ad = (a_m[:, :, None] * (fac["delta"][l][:, None, u0:u1] * scale)).reshape(N, Q * J)
            Tt = fac["Tt"].get((l, m))
            if Tt is None:  # adjacent: diag(φ_m')
                Tt = torch.diag_embed(fac["d1"][m])
            Tt = Tt[:, :p_hi].reshape(N, -1)  # [N, (p, k)]
            S = S + (ad.T @ Tt).view(Q, J, p_hi, kk).permute(2, 0, 1, 3)
        # S into acc: whole units of the columns through a 4-D view, cut units on the edges (the
        # float64 copy_/add_ converts on the fly: no float64 temporary of S)
        put = (lambda dst, src: dst.copy_(src)) if first else (lambda dst, src: dst.add_(src))
        in_m = Q - 1
        lo = -(-c0 // kk) if c0 % kk else u0  # first whole unit
        hi = c1 // kk  # end of whole units
        for g in mine:
            part = S[:, :in_m] if g.kind == "W" else S[:, in_m:]  # [p, per_unit, J, kk]
            rows = min(g.size, j1 - g.offset)
            full = min(p_hi, rows // g.per_unit)
            rest = rows - full * g.per_unit
            for r0, nu, src in (
                (g.offset, full, part[:full]),
                (g.offset + full * g.per_unit, 1, part[full : full + 1, :rest]),
            ):
                if nu == 0 or src.numel() == 0:
                    continue
                nr = src.shape[0] * src.shape[1]
                if hi > lo:
                    cw = slice(gc.offset + lo * kk - j0, gc.offset + hi * kk - j0)
                    dst = acc[r0 : r0 + nr, cw].view(src.shape[0], src.shape[1], hi - lo, kk)
                    put(dst, src[:, :, lo - u0 : hi - u0])
                for u in {u0, u1 - 1} - set(range(lo, hi)):  # cut units
                    k0, k1 = max(c0, u * kk) - u * kk, min(c1, (u + 1) * kk) - u * kk
                    cw = slice(gc.offset + u * kk + k0 - j0, gc.offset + u * kk + k1 - j0)
                    put(acc[r0 : r0 + nr, cw], src[:, :, u - u0, k0:k1].reshape(nr, k1 - k0))
