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

    def __init__(self, prob, batches, n_total: int, budget: int, strip_width: int, exact: bool = True):
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
        # bytes per example of the cached factors: K for every layer pair, T for the pairs two or
        # more layers apart, the inputs ã, δ and φ' of every layer
        self.per_example_bytes = item * (
            sum(widths[m] * widths[l] for m in range(L) for l in range(m, L))
            + sum(widths[m] * ins[l] for m in range(L) for l in range(m + 2, L))
            + sum(ins)
            + 2 * sum(widths)
        )
        # computing them also holds a few per-example [w, w] products of the backward recursion
        extra = item * 5 * max(w * v for w in widths for v in ins)
        total = sum(x.shape[0] for x, _ in batches)
        n_max = max([x.shape[0] for x, _ in batches], default=1)

        def block(rows):
            # one workspace, reused by every block product: Z [units p, rows, columns] and the
            # output [units p, Q, columns]; a quarter of the budget up to 64 MiB, at least one
            # unit p against one unit j
            least = item * (rows + max(ins)) * max(ins)
            return max(least, min(budget // 4, 64 << 20))

        # the factors of all examples are kept across strips when they fit; else chunks of
        # examples are recomputed for every strip: two chunks alive while the next is computed,
        # and (measured) about one more that the allocator holds but cannot reuse
        self.cached = total * self.per_example_bytes + n_max * extra + block(n_max) <= budget
        if self.cached:
            rows = n_max
            self.workspace_bytes = total * self.per_example_bytes + n_max * extra + block(rows)
        else:
            rows = max(1, int(0.75 * budget) // (3 * self.per_example_bytes + extra))
            rows = min(rows, n_max)
            self.workspace_bytes = rows * (3 * self.per_example_bytes + extra) + block(rows)
        self.chunks = split_rows(batches, rows)
        self.block_bytes = block(rows)
        self.cache: list = []
        self.ws = torch.empty(0)

    def prepare(self, H) -> None:
        """Allocate the products' workspace; compute and keep the per-example factors when they
        are cached across strips."""
        self.ws = torch.empty(
            self.block_bytes // self.prob.theta.element_size(), dtype=self.prob.dtype, device=H.device
        )
        if self.cached:
            self.cache = [self._factors(x, y) for x, y in self.chunks]

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
        chunks = iter(self.cache) if self.cached else (self._factors(x, y) for x, y in self.chunks)
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
        += (later chunks) the block's entries (divided by n) over this chunk's examples. Rows are
        (unit p of layer m, its input q̃; the last q̃ is the bias), columns (unit j of layer l,
        its input k) = divmod of the column in the group. Per unit p the block is ONE matrix
        product with the example count as inner dimension, written in the strip's own layout:

            block[p, q̃, c] = Σ_i ã_m,i[q̃] Z_p,i[c],
            Z_p,i[c] = K_i[p, j] ã_l,i[k]  +  [m<l, W_l] δ_l,i[j] T_i[k, p]      ((j, k) of c)

        (the Kronecker term and the bilinear weight × input coupling share the product), batched
        over p in chunks that fit the workspace; the strip receives the [p, q̃, c] result row by
        row (contiguous rows: the float32 → float64 conversion streams)."""
        l, a_m = gc.layer, fac["a"][m]
        mine = [g for g in self.groups if g.layer == m and g.offset < j1]
        # rows below j1 only: in the layer's own block that is the upper triangle of the strip
        p_hi = max(min(g.units, -(-(j1 - g.offset) // g.per_unit)) for g in mine)
        N, Q = a_m.shape
        kk = gc.per_unit
        scale = 1.0 / self.n
        K = fac["K"][m, l].transpose(0, 1)  # [w_m, N, w_l]
        weight_cols = gc.kind == "W"
        bilinear = self.exact and m < l and weight_cols
        Tt = fac["Tt"].get((l, m))  # [N, w_m, in_l], or None for adjacent layers (diag φ_m')
        a_l = fac["a"][l][:, :-1] * scale if weight_cols else None  # ã_l / n without the 1, [N, kk]
        a_mT = a_m.T.unsqueeze(0)  # [1, Q, N]
        item = a_m.element_size()
        # whole units j of layer l per product (Z over their columns, cut to c0:c1), and units p of
        # layer m per batch, so that Z and the output fit in the workspace
        per_col = (N + Q) * item
        units = max(1, self.block_bytes // max(1, per_col * kk))
        u_lo, u_hi = c0 // kk, (c1 - 1) // kk + 1
        for v0 in range(u_lo, u_hi, units):
            v1 = min(u_hi, v0 + units)
            s0, s1 = max(c0, v0 * kk), min(c1, v1 * kk)
            J = v1 - v0
            dg = fac["delta"][l][:, v0:v1] * scale if bilinear else None  # δ_l / n, [N, J]
            pc = max(1, min(p_hi, self.block_bytes // max(1, per_col * J * kk)))
            for p0 in range(0, p_hi, pc):
                p1 = min(p_hi, p0 + pc)
                Kp = K[p0:p1, :, v0:v1, None]  # [pc, N, J, 1]: K_i[p, j]
                nz, no = (p1 - p0) * N * J * kk, (p1 - p0) * Q * (s1 - s0)
                Z = self.ws[:nz].view(p1 - p0, N, J, kk)
                torch.mul(Kp, a_l[None, :, None, :] if a_l is not None else scale, out=Z)  # [pc, N, J, kk]
                if bilinear:
                    if Tt is not None:  # + δ_l,i[j] T_i[k, p]
                        Z.addcmul_(Tt[:, p0:p1, None, :].transpose(0, 1), dg[None, :, :, None])
                    else:  # T_i[k, p] = φ_m'(z_m,i)[p] [k = p]: only the inputs k = p
                        units_p = torch.arange(p0, p1, device=a_m.device)
                        rows = torch.arange(p1 - p0, device=a_m.device)
                        Z[rows, :, :, units_p] += fac["d1"][m][:, p0:p1].T[:, :, None] * dg
                Zc = Z.view(p1 - p0, N, J * kk)[:, :, s0 - v0 * kk : s1 - v0 * kk]
                out = self.ws[nz : nz + no].view(p1 - p0, Q, s1 - s0)
                torch.bmm(a_mT.expand(p1 - p0, Q, N), Zc, out=out)
                self._put(acc, out, mine, p0, p1, Q - 1, gc.offset + s0 - j0, j1, first)

    @staticmethod
    def _put(acc, out, mine, p0, p1, in_m, col, j1, first):
        """acc[layer m's rows of units p0:p1 (< j1), col : col + nc] = or += out [pc, Q, nc]
        (the first in_m entries of q̃ are the weight's rows p·in_m + q, the last the bias's)."""
        nc = out.shape[2]
        for g in mine:
            part = out[:, :in_m] if g.kind == "W" else out[:, in_m:]  # [pc, per_unit, nc]
            rows = min(g.size, j1 - g.offset)  # rows of this group inside the strip
            full = max(0, min(p1, rows // g.per_unit) - p0)  # whole units p0 .. p0 + full
            r0 = g.offset + p0 * g.per_unit
            pieces = []
            if full:  # a [units, per_unit, nc] view of the strip's rows: no copy of out
                view = acc[r0 : r0 + full * g.per_unit, col : col + nc].view(full, g.per_unit, nc)
                pieces.append((view, part[:full]))
            rest = rows - (p0 + full) * g.per_unit  # a unit cut by j1
            if p0 + full < p1 and 0 < rest < g.per_unit:
                r = r0 + full * g.per_unit
                pieces.append((acc[r : r + rest, col : col + nc], part[full, :rest]))
            for dst, src in pieces:
                if first:
                    dst.copy_(src)
                else:
                    dst.add_(src)
