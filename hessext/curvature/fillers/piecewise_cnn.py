"""Exact Hessian of a piecewise-linear CNN = GGN + residual, the residual from packed tangents.

    H = (1/n) Σ_i J_iᵀ Λ_i J_i  +  ∇²_θ S(θ),
    S(θ) = (1/n) Σ_i r_iᵀ f(x_i; θ),   r_i = ∂ℓ_i/∂f  (held fixed)

For an nn.Sequential of Conv1d/Conv2d/Linear layers and channel-wise piecewise-linear modules
(ReLU, LeakyReLU, Identity, Dropout in eval, MaxPool, AvgPool, Flatten) the masks and argmaxes are
locally constant, so ∇²S comes only from the bilinear weight × input products: with the adjoint
δ_l = ∂(Σ_i r_iᵀ f_i)/∂z_l of weight layer l (z_l its output, independent of θ_{<l}),

    ∂²S / ∂θ_m ∂W_l = (1/n) ∂/∂θ_m wgrad_l(δ_l, a_{l-1}(θ_m))        (m < l),

where wgrad_l (layer l's weight gradient) is linear in its input a_{l-1}. Inside a layer's own block
and for the biases of the later layer the residual is zero.

The Jacobian over θ_m is a forward-mode derivative, but one tangent per parameter of W_m wastes a
factor C_out: the tangent of W_m[c, q] (output channel c, patch position q) only moves channel c
of z_m, and every later channel-wise module keeps channels apart. So the C_out tangents with the
same q are packed into ONE tangent T_q (channel c holds channel c's response: the input patch q,
or 1 for a bias), pushed through the channel-wise modules exactly (their Jacobian at the
primal: ReLU masks, max-pool argmax gathers, average pools, reshapes), and at the next weight
layer l the weight gradient wgrad_l(δ_l, T_q)[j, c, ·] only involves input channel c: it is
exactly the residual entry of (W_m[c, q], W_l[j, c, ·]). Layers beyond the next one need the
tangents apart again: layer l's contribution of each input channel separately (a per-channel
contraction with l's receptive fields) unpacks them into the P_m tangents of z_l, which are
pushed through the rest and contracted with each later δ. Everything is computed at the model's
precision and summed into
float64 blocks once, in the filler's constructor; the strips then only copy from them.

BatchNorm in eval mode is z = γ_c (x_c − μ_c)/s_c + β_c with the running statistics (constants).
Without affine parameters it is one more channel-wise linear module (scale 1/s_c). With them it is
also a weight layer, a depthwise one (_BNLayer): γ, β act like a 1x1 depthwise convolution with
bias on x̂ = (x − μ)/s, so its Q = 2 packed tangents (x̂_c and 1 in channel c) are exact; its γ
column against earlier parameters is Σ δ_c dx_c / s_c, a contraction of the packed tangents per
channel (entry (θ_m[c, q], γ_c)); and because output channel c reads input channel c only, the
tangents go through it still packed (scaled by γ_c/s_c), to be unpacked at the next convolution
or Linear. Global average pools (AdaptiveAvgPool1d/2d(1), SSHCNN's mean over H, W) are
channel-wise linear modules too.

Models: any model with a layer chain (hessext/curvature/chain.py: an nn.Sequential, or a model
that declares ``layer_chain()``); supports() also checks the chain's output against the model's.
The per-example Jacobians of the GGN factors come from the same layer machinery (one backward
pass per output coordinate, per-example weight gradients from the receptive fields), without
torch.func.

Memory: the blocks (rows θ_<l, columns W_l) lie in the result's upper triangle, and the pass
adds into them there (no copy beside the result); memory_budget bounds its working set
(examples per chunk, packed tangents per pass).
"""

from __future__ import annotations

import copy
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from hessext._internal.memory import trim_heap
from hessext._internal.modules import global_hooks, has_hooks, not_stock
from hessext._internal.progress import progress_bar
from hessext.curvature.chain import GlobalMean, layer_chain
from hessext.curvature.fillers.ggn import GGNFiller
from hessext.curvature.problem import saved_bytes_per_example, split_rows

_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout)
_POOLS = {nn.MaxPool1d: 3, nn.AvgPool1d: 3, nn.MaxPool2d: 4, nn.AvgPool2d: 4}
_GLOBAL_POOLS = {nn.AdaptiveAvgPool1d: 3, nn.AdaptiveAvgPool2d: 4}
_CONVS = {nn.Conv1d: (F.conv1d, 1), nn.Conv2d: (F.conv2d, 2)}
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _is_weight_layer(m) -> bool:
    """Modules with parameters: Linear/Conv and affine BatchNorm (γ, β a channel-wise layer)."""
    return isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) or (type(m) in _BATCHNORMS and m.affine)


def _is_global_pool(m) -> bool:
    if isinstance(m, GlobalMean):
        return True
    if type(m) in _GLOBAL_POOLS:
        size = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,)
        return all(v == 1 for v in size)
    return False


def _bn_stats(m, dtype):
    """(running mean, sqrt(running var + eps)) of a BatchNorm at dtype: its eval-mode map is
    z = γ (x − μ)/s + β, channel by channel."""
    mean = m.running_mean.detach().to(dtype)
    return mean, (m.running_var.detach().to(dtype) + m.eps).sqrt()


def _channel_view(v, h_dim):
    """A per-channel vector [C] shaped to broadcast over an activation's trailing dims [C, *S]
    (h_dim: the activation's dimension count with the batch axis)."""
    return v.view(-1, *([1] * (h_dim - 2)))


def _param_names(model, mods):
    """{id(module): its qualified name in model} for the modules of the chain."""
    names = {id(m): n for n, m in model.named_modules()}
    return {id(m): names.get(id(m)) for m in mods}


def blocker(prob) -> str | None:
    """Why the packed-tangent residual does not apply to ``prob`` (None: it does). It applies to
    a layer chain (an nn.Sequential, or a model declaring ``layer_chain()``) of Conv1d/Conv2d
    (groups=1, zero padding), Linear, ReLU/LeakyReLU/Identity/Dropout, Max/AvgPool1d/2d, global
    average pools (AdaptiveAvgPool1d/2d(1)), BatchNorm1d/2d with running statistics (affine or
    not) and Flatten, all with their stock forward (exact types, no hooks, no replaced forward:
    hessext/_internal/modules.py) and each layer with parameters used once, differentiated in
    all its parameters, on which channels stay apart between weight layers (pools only on
    convolution outputs of their own dimension; after a Linear, Flatten or global pool only
    elementwise modules and BatchNorm1d), and whose output on an example is the model's."""
    model = prob.model
    mods = layer_chain(model)
    if not mods:
        return "the model is not a layer chain (an nn.Sequential or a model with layer_chain())"
    if isinstance(model, nn.Sequential):
        why = not_stock(model, (nn.Sequential,))
    else:  # a declared chain: the model's own forward is checked against it below
        why = has_hooks(model) or global_hooks()
    if why is not None:
        return f"the model: {why}"
    allowed = (
        (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Flatten, GlobalMean)
        + _ELEMENTWISE
        + tuple(_POOLS)
        + tuple(_GLOBAL_POOLS)
        + _BATCHNORMS
    )
    for i, m in enumerate(mods):
        why = not_stock(m, allowed)
        if why is not None:
            return f"chain module {i} ({type(m).__name__}): {why}"
    weighted = [m for m in mods if any(True for _ in m.parameters())]
    if len({id(m) for m in weighted}) != len(weighted):  # a stock activation may be reused
        return "a layer with parameters is used more than once in the chain"
    if not any(_is_weight_layer(m) for m in mods):
        return "the chain has no weight layer"
    all_names = [n for n, _ in model.named_parameters()]
    # besides θ only buffers (BatchNorm's running statistics, constants here)
    buffers = {n for n, _ in model.named_buffers()}
    if prob.names != all_names or any(n not in buffers for n in prob.others):
        return "not all parameters are differentiated"
    # θ must hold the weight layers' parameters in chain order (weight, bias), nothing else
    qual = _param_names(model, mods)
    chain_names = [
        f"{qual[id(m)]}.{p}"
        for m in mods
        if _is_weight_layer(m)
        for p in ("weight", "bias")
        if getattr(m, p) is not None
    ]
    if chain_names != prob.names:
        return "the parameters are not the chain's weight layers' own, in order (tied or extra parameters)"
    for m in mods:
        if isinstance(m, (nn.Conv1d, nn.Conv2d)) and (m.groups != 1 or m.padding_mode != "zeros"):
            return "a convolution has groups > 1 or non-zero padding"
        if isinstance(m, nn.Flatten) and (m.start_dim != 1 or m.end_dim != -1):
            return "a Flatten does not flatten all but the batch axis"
        if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) and m.return_indices:
            return "a max pooling returns indices"
        if type(m) in _GLOBAL_POOLS and not _is_global_pool(m):
            return "an adaptive pool is not global"
        # without running statistics eval mode normalises by the batch's: examples interact
        if type(m) in _BATCHNORMS and (m.running_mean is None or m.running_var is None):
            return "a BatchNorm has no running statistics"
    # shapes along the network on one example: each module must see the batched input it expects
    h = prob.batches[0][0][:1]
    if not h.is_floating_point():
        return "the inputs are not floating point"
    flat = False  # after a Flatten, Linear or global pool: features, not channels
    seen_weight = False
    mods, layers = _weight_layers(prob)
    by_idx = {L.idx: L for L in layers}  # θ's copies at the compute dtype, not the model's
    channels_mixed = "channels do not stay apart between weight layers"
    try:
        with torch.no_grad():
            for i, m in enumerate(mods):
                if isinstance(m, nn.Linear):
                    if h.dim() != 2:
                        return "a Linear layer sees more than [N, features]"
                    flat = True
                elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    if flat or h.dim() != 2 + _CONVS[type(m)][1]:
                        return channels_mixed
                elif type(m) in _POOLS:
                    if seen_weight and (flat or h.dim() != _POOLS[type(m)]):
                        return channels_mixed
                elif type(m) in _GLOBAL_POOLS:
                    if seen_weight and (flat or h.dim() != _GLOBAL_POOLS[type(m)]):
                        return channels_mixed
                elif isinstance(m, GlobalMean):
                    if h.dim() < 3 or (seen_weight and flat):
                        return channels_mixed
                    flat = True
                elif isinstance(m, nn.BatchNorm2d):
                    if h.dim() != 4:
                        return channels_mixed
                elif isinstance(m, nn.BatchNorm1d):
                    # [N, F] (features: elementwise) or [N, C, L] (channels of a Conv1d)
                    if h.dim() not in (2, 3) or (flat and h.dim() != 2):
                        return channels_mixed
                elif isinstance(m, nn.Flatten):
                    flat = True
                seen_weight = seen_weight or _is_weight_layer(m)
                h = by_idx[i].forward(h) if i in by_idx else _apply(m, h)
            # the chain must be the model's forward
            if not torch.equal(h, prob.forward(prob.theta, prob.batches[0][0][:1])):
                return "the chain's output differs from the model's"
    except (RuntimeError, ValueError) as err:
        return f"the chain fails on an example ({type(err).__name__})"
    return None


def supports(prob) -> bool:
    """Whether the packed-tangent residual applies (``blocker(prob)`` says why not)."""
    return blocker(prob) is None


def _apply(m, h):
    """The module on h without writing h (inplace activations would overwrite saved primals)."""
    if isinstance(m, nn.ReLU):
        return F.relu(h)
    if isinstance(m, nn.LeakyReLU):
        return F.leaky_relu(h, m.negative_slope)
    if isinstance(m, (nn.Identity, nn.Dropout)):  # Dropout: the assembly runs in eval mode
        return h
    if type(m) in _BATCHNORMS:  # affine=False (affine ones are _BNLayers)
        # its statistics at the compute dtype, as the problem's functional forward sees them
        return F.batch_norm(
            h, m.running_mean.to(h.dtype), m.running_var.to(h.dtype), None, None, False, 0.0, m.eps
        )
    return m(h)


def _per_channel(pool, t, nd):
    """pool (the same spatial map for every channel) on t [..., *S] with any leading dimensions,
    taken in memory order so that a transposed view is pooled without being copied first."""
    lead = t.dim() - nd
    order = sorted(range(lead), key=lambda i: -t.stride(i))
    tp = t.permute(*order, *range(lead, t.dim()))
    o = pool(tp.reshape(-1, 1, *tp.shape[lead:]))
    o = o.view(*tp.shape[:lead], *o.shape[2:])
    inverse = sorted(range(lead), key=lambda i: order[i])
    return o.permute(*inverse, *range(lead, o.dim()))


def _scale(t, s):
    """t * s, s [n, ...] broadcast over t's leading tangent dimensions, with s copied into t's
    memory order first: a transposed tangent view times a contiguous mask is a slow strided loop."""
    lead = t.dim() - s.dim()
    order = [d - lead for d in sorted(range(t.dim()), key=lambda i: -t.stride(i)) if d >= lead]
    if order != sorted(order):
        s = s.permute(order).contiguous().permute(sorted(range(len(order)), key=lambda i: order[i]))
    return t * s


def _avg_pool_op(m, nd):
    """The average pool as a mean over strided windows (no copy of a transposed tangent view),
    or None where padding or ceil_mode make the window count vary (then the module itself)."""
    as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd
    k, st, p = as_tuple(m.kernel_size), as_tuple(m.stride or m.kernel_size), as_tuple(m.padding)
    if any(p) or m.ceil_mode:
        return None
    divisor = getattr(m, "divisor_override", None)

    def op(t):
        first = t.dim() - nd
        for i in range(nd):
            t = t.unfold(first + i, k[i], st[i])
        dims = tuple(range(-nd, 0))
        return t.mean(dims) if divisor is None else t.sum(dims) / divisor

    return op


def _linearize(mods, z):
    """The Jacobian of the parameter-free modules ``mods`` at the primal z [n, ...] as a function
    on tangents with leading batch dimensions [B, n, ...] (masks and argmaxes computed once)."""
    ops = []
    h = z
    for m in mods:
        if isinstance(m, nn.ReLU):
            ops.append(lambda t, mask=(h > 0).to(h.dtype): _scale(t, mask))
        elif isinstance(m, nn.LeakyReLU):
            ops.append(
                lambda t, s=torch.where(h > 0, h.new_ones(()), h.new_full((), m.negative_slope)): _scale(t, s)
            )
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
            nd = 1 if isinstance(m, nn.MaxPool1d) else 2
            pool = F.max_pool1d if nd == 1 else F.max_pool2d
            _, idx = pool(
                h, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode, return_indices=True
            )

            def op(t, idx=idx.flatten(-nd), nd=nd, out_shape=idx.shape[-nd:]):
                g = t.flatten(-nd).gather(-1, idx.expand(*t.shape[: -nd - 2], *idx.shape))
                return g.view(*g.shape[:-1], *out_shape)

            ops.append(op)
        elif isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            nd = 1 if isinstance(m, nn.AvgPool1d) else 2
            ops.append(_avg_pool_op(m, nd) or (lambda t, m=m, nd=nd: _per_channel(m, t, nd)))
        elif isinstance(m, nn.Flatten):
            ops.append(lambda t, k=h.dim() - 1: t.flatten(-k))
        elif _is_global_pool(m):
            # AdaptiveAvgPool(1) keeps its size-1 dims, GlobalMean drops them
            dims, keep = tuple(range(-(h.dim() - 2), 0)), not isinstance(m, GlobalMean)
            ops.append(lambda t, dims=dims, keep=keep: t.mean(dims, keepdim=keep))
        elif type(m) in _BATCHNORMS:
            # affine=False: x ↦ (x − μ)/s, linear part 1/s per channel
            s = _channel_view(_bn_stats(m, h.dtype)[1].reciprocal(), h.dim())
            ops.append(lambda t, s=s: t * s)
        h = _apply(m, h)

    return ops


def _compose(ops):
    def jac(t):
        for op in ops:
            t = op(t)
        return t

    return jac


class _Layer:
    """One weight layer: its position in the chain, its parameters' place in θ and its linear maps."""

    depthwise = False

    def __init__(self, idx, mod, offset, weight, bias):
        self.idx, self.mod, self.offset = idx, mod, offset
        self.weight, self.bias = weight, bias
        self.has_bias = self.bias is not None
        self.w_numel = self.weight.numel()
        self.size = self.w_numel + (self.bias.numel() if self.has_bias else 0)
        self.out_ch = self.weight.shape[0]
        self.q_w = self.w_numel // self.out_ch  # patch positions C_in * K (or in_features)
        self.Q = self.q_w + int(self.has_bias)  # ... plus the bias "position"
        self.is_conv = not isinstance(mod, nn.Linear)
        self.in_ch = self.weight.shape[1]
        if self.is_conv:
            self.convfn, self.nd = _CONVS[type(mod)]
            self.ks = tuple(self.weight.shape[2:])
            self.K = math.prod(self.ks)
            self.conv_args = dict(stride=mod.stride, padding=mod.padding, dilation=mod.dilation)
            self.stride, self.dilation = tuple(mod.stride), tuple(mod.dilation)
            nd = self.nd
            if isinstance(mod.padding, str):  # 'valid' or 'same' (extra element on the right)
                total = [0 if mod.padding == "valid" else d * (k - 1) for d, k in zip(mod.dilation, self.ks)]
                pads = [(t // 2, t - t // 2) for t in total]
            else:
                pads = [(p, p) for p in mod.padding]
            self.pad = [v for lr in reversed(pads) for v in lr]  # F.pad order: last dim first
            # letters for einsum: s.. spatial, k.. kernel
            sp, kr = "stu"[:nd], "klm"[:nd]
            self.eq_wgrad = f"bnc{sp}{kr},nj{sp}->bjc{kr}"
            self.eq_per_example = f"nc{sp}{kr},nj{sp}->njc{kr}"
        else:
            self.K = 1

    def then_avg_pool(self, pool):
        """This convolution (without bias) followed by an average pool without padding, as one
        strided convolution (only for tangents): offsets i·s + κ·d of pool offset i and kernel
        offset κ add up into a kernel of (a-1)·s + (K-1)·d + 1 taps with stride t·s, so the
        pool's 4x larger input is never formed. None where it does not apply."""
        nd = self.nd
        as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd
        a, t, p = (
            as_tuple(pool.kernel_size),
            as_tuple(pool.stride or pool.kernel_size),
            as_tuple(pool.padding),
        )
        if any(p) or pool.ceil_mode:
            return None
        divisor = getattr(pool, "divisor_override", None) or math.prod(a)
        kc = [(ai - 1) * s + (k - 1) * d + 1 for ai, s, k, d in zip(a, self.stride, self.ks, self.dilation)]
        w = self.weight.new_zeros(*self.weight.shape[:2], *kc)
        for offs in itertools.product(*[range(ai) for ai in a]):
            idx = tuple(
                slice(i * s, i * s + (k - 1) * d + 1, d)
                for i, s, k, d in zip(offs, self.stride, self.ks, self.dilation)
            )
            w[(slice(None), slice(None), *idx)] += self.weight / divisor
        fused = copy.copy(self)
        fused.weight, fused.bias, fused.has_bias = w, None, False
        fused.ks, fused.K = tuple(kc), math.prod(kc)
        fused.stride = tuple(ti * s for ti, s in zip(t, self.stride))
        fused.dilation = (1,) * nd
        return fused

    def forward(self, a):
        if self.is_conv:
            return self.convfn(a, self.weight, self.bias, **self.conv_args)
        return F.linear(a, self.weight, self.bias)

    def windows(self, u):
        """The receptive fields of u [..., C, *S] as a view [..., C, *S_out, *kernel] (after
        zero padding): the layer's output is Σ over C and kernel of W times these."""
        nd = self.nd
        if any(self.pad):
            u = F.pad(u, self.pad)
        first = u.dim() - nd
        for i, (k, s, d) in enumerate(zip(self.ks, self.stride, self.dilation)):
            u = u.unfold(first + i, d * (k - 1) + 1, s)
        if any(d != 1 for d in self.dilation):
            u = u[(..., *[slice(None, None, d) for d in self.dilation])]
        return u

    def linear_part(self, u):
        """The layer's map without bias on a batch of tangents u [B, n, ...] → [B, n, ...]."""
        B, n = u.shape[:2]
        if self.is_conv:
            u = u.reshape(B * n, *u.shape[2:])
            out = self.convfn(
                F.pad(u, self.pad) if any(self.pad) else u,
                self.weight,
                None,
                stride=self.stride,
                dilation=self.dilation,
            )
            return out.view(B, n, *out.shape[1:])
        return u @ self.weight.T

    def patches(self, a):
        """[N, Q, *S_out]: the layer's output channel c is Σ_q W[c, q] · patches[:, q] (bias: q = Q-1)."""
        if self.is_conv:
            w = self.windows(a)  # [N, C, *S', *ks]
            nd = self.nd
            w = w.movedim(tuple(range(-nd, 0)), tuple(range(2, 2 + nd)))  # [N, C, *ks, *S']
            p = w.reshape(a.shape[0], self.q_w, *w.shape[2 + nd :])
        else:
            p = a
        if self.has_bias:
            p = torch.cat([p, torch.ones_like(p[:, :1])], 1)
        return p

    def wgrad(self, delta, u):
        """Σ_examples of the weight gradient for each tangent input u [B, n, *in] with output
        adjoint delta [n, J, *S'] → [B, w_numel] (W's row-major order)."""
        B = u.shape[0]
        if self.is_conv:
            return torch.einsum(self.eq_wgrad, self.windows(u), delta).reshape(B, -1)
        return torch.einsum("bnf,nj->bjf", u, delta).reshape(B, -1)

    def wgrad_and_unpack(self, delta, u, C, unpack):
        """wgrad(delta, u) [B, w_numel] and, if asked, unpack(u, C) [B*C, n, *out] from ONE copy of
        the receptive fields, laid out [B, C, K, n*S'] so that both are plain matrix products."""
        if not self.is_conv:
            return self.wgrad(delta, u), (self.unpack(u, C) if unpack else None)
        B, n = u.shape[:2]
        nd, J, K = self.nd, self.out_ch, self.K
        w = self.windows(u)  # [B, n, C, *S', *ks]
        S_out = w.shape[3 : 3 + nd]
        w = w.permute(0, 2, *range(3 + nd, 3 + 2 * nd), 1, *range(3, 3 + nd)).reshape(B, C, K, -1)
        G = None
        if delta is not None:
            d = delta.movedim(1, -1).reshape(-1, J)  # [n*S', J]
            G = (w.reshape(B * C * K, -1) @ d).view(B, C, K, J).permute(0, 3, 1, 2).reshape(B, -1)
        if not unpack:
            return G, None
        out = torch.matmul(self.weight.view(J, C, K).transpose(0, 1), w)  # [B, C, J, n*S']
        # a transposed view, not a copy: the next (channel-wise) modules shrink it first
        return G, out.view(B * C, J, n, *S_out).transpose(1, 2)

    def per_example_grad(self, a, delta):
        """[N, size]: each example's gradient of (W row-major, b) for input a and output adjoint delta."""
        N = a.shape[0]
        if self.is_conv:
            gw = torch.einsum(self.eq_per_example, self.windows(a), delta).reshape(N, -1)
            gb = delta.flatten(2).sum(2)
        else:
            gw = (delta[:, :, None] * a[:, None, :]).reshape(N, -1)
            gb = delta
        return torch.cat([gw, gb], 1) if self.has_bias else gw

    def unpack(self, u, C):
        """For a Linear layer: its output from each of the C feature blocks (the previous layer's
        channels after a Flatten, or its units) of packed tangents u [B, n, F] separately →
        [B*C, n, J], tangent (b, c) at b*C + c. (Convolutions: wgrad_and_unpack.)"""
        B, n = u.shape[:2]
        J, blk = self.out_ch, u.shape[2] // C
        out = torch.einsum("bncf,jcf->bcnj", u.reshape(B, n, C, blk), self.weight.view(J, C, blk))
        return out.reshape(B * C, n, J)

    def rows(self, c, q):
        """Local θ-index of the tangent (output channel c, patch position q)."""
        bias_row = self.out_ch * self.q_w + c
        return torch.where(q < self.q_w, c * self.q_w + q, bias_row)

    def input_channel_of_weight(self, C_prev):
        """For each entry of W (row-major), which channel of the previous weight layer's output
        it reads ([w_numel] long)."""
        col = torch.arange(self.w_numel, device=self.weight.device)
        if self.is_conv:
            return (col // self.K) % self.in_ch
        F_in = self.in_ch
        return (col % F_in) // (F_in // C_prev)


class _BNLayer:
    """An affine BatchNorm in eval mode as a weight layer: z = γ ⊙ x̂ + β with x̂ = (x − μ)/s (μ, s
    from the running statistics, constants). Like a depthwise 1x1 convolution with bias on x̂:
    "weight" γ [C], "bias" β [C], and per channel the patches x̂_c (q = 0) and 1 (q = 1). It is
    depthwise: output channel c reads input channel c only, so packed tangents pass through it
    still packed (linear part γ/s per channel) and are never unpacked here. Its residual column
    of γ_c against earlier parameters is Σ δ_c · dx_c / s_c; β's column is zero like a bias's."""

    depthwise = True
    is_conv = False

    def __init__(self, idx, mod, offset, weight, bias, mean, var):
        self.idx, self.mod, self.offset = idx, mod, offset
        self.weight, self.bias = weight, bias
        self.mean, self._var = mean, var
        self.std = (var + mod.eps).sqrt()
        self.has_bias = True
        self.w_numel = weight.numel()
        self.size = 2 * self.w_numel
        self.out_ch = self.in_ch = self.w_numel
        self.q_w, self.Q, self.K = 1, 2, 1

    def forward(self, a):
        # nn.BatchNorm's own eval-mode call, so that the chain reproduces the model bit for bit
        return F.batch_norm(a, self.mean, self._var, self.weight, self.bias, False, 0.0, self.mod.eps)

    def _cv(self, v, dim):
        return _channel_view(v, dim)

    def packed_tangents(self, a, q0, q1):
        """[q1 - q0, n, C, *S]: channel c of tangent q is z's response to (γ_c, β_c)[q]."""
        xhat = (a - self._cv(self.mean, a.dim())) / self._cv(self.std, a.dim())
        return torch.stack([xhat, torch.ones_like(xhat)][q0:q1])

    def _contract(self, delta, u):
        """Σ over examples and positions of δ_c · u_c for tangents u [B, n, C, *S] → [B, C]."""
        B, n = u.shape[:2]
        return torch.einsum(
            "bncs,ncs->bc", u.reshape(B, n, self.out_ch, -1), delta.reshape(n, self.out_ch, -1)
        )

    def wgrad(self, delta, u):
        """[B, C]: γ's gradient for each tangent u [B, n, C, *S] of the input x (dx̂ = dx / s)."""
        return self._contract(delta, u) / self.std

    def linear_part(self, u):
        return u * self._cv(self.weight / self.std, u.dim() - 1)

    def per_example_grad(self, a, delta):
        N = a.shape[0]
        xhat = (a - self._cv(self.mean, a.dim())) / self._cv(self.std, a.dim())
        d = delta.reshape(N, self.out_ch, -1)
        return torch.cat([(d * xhat.reshape(N, self.out_ch, -1)).sum(2), d.sum(2)], 1)

    def rows(self, c, q):
        return torch.where(q < 1, c, self.w_numel + c)

    def input_channel_of_weight(self, C_prev):
        """γ_f reads feature f, which belongs to packed channel f // (F / C_prev) (a BatchNorm1d
        after a Flatten normalises each feature of a channel's block separately)."""
        col = torch.arange(self.w_numel, device=self.weight.device)
        return col // (self.w_numel // C_prev)


def _weight_layers(prob):
    """(the chain of modules, its weight layers with their parameters' views into θ)."""
    mods = layer_chain(prob.model)
    qual = _param_names(prob.model, mods)
    params = prob.unflatten(prob.theta)
    layers, o = [], 0
    for i, m in enumerate(mods):
        if _is_weight_layer(m):
            name = qual[id(m)]
            if type(m) in _BATCHNORMS:
                mean = prob.others[f"{name}.running_mean"]
                var = prob.others[f"{name}.running_var"]
                layers.append(_BNLayer(i, m, o, params[f"{name}.weight"], params[f"{name}.bias"], mean, var))
            else:
                layers.append(_Layer(i, m, o, params[f"{name}.weight"], params.get(f"{name}.bias")))
            o += layers[-1].size
    return mods, layers


def _run(mods, layers, x):
    """Forward pass → (inputs a_l of the weight layers, their outputs z_l, the output); the z_l
    live in one autograd graph that starts at the first layer's output (θ is not differentiated)."""
    by_idx = {L.idx: L for L in layers}
    a, z = [], []
    with torch.enable_grad():
        h = x
        for i, m in enumerate(mods):
            if i in by_idx:
                a.append(h.detach())
                h = by_idx[i].forward(h)
                if not z:
                    h = h.detach().requires_grad_(True)
                z.append(h)
            else:
                h = _apply(m, h)
    return a, z, h


def per_example_jacobian(prob, mods, layers, x):
    """[N, C, P]: each example's Jacobian of its flattened output, one backward pass per output
    coordinate and per-example weight gradients from the layer inputs (no torch.func)."""
    a, z, out = _run(mods, layers, x)
    N = x.shape[0]
    out = out.reshape(N, -1)
    C = out.shape[1]
    J = torch.empty(N, C, prob.num_params, dtype=out.dtype, device=out.device)
    for c in range(C):
        # example i's output depends on example i's input only: the batch gradient is per example
        deltas = torch.autograd.grad(out[:, c].sum(), z, retain_graph=c + 1 < C)
        J[:, c] = torch.cat([L.per_example_grad(a_l, d) for L, a_l, d in zip(layers, a, deltas)], 1)
    return J


class PackedTangentResidual:
    """The upper-triangular residual blocks ∂²S/∂θ_{<l}∂W_l in float64 for every weight layer l
    after the first, computed over the given mini-batches in one pass and added straight into the
    result's upper triangle (the blocks H[0:o_l, o_l:o_l + |W_l|] lie above its diagonal)."""

    def __init__(self, prob, mods, layers, batches, n_total, r_of, budget, progress=False):
        self.prob, self.n = prob, n_total
        self.mods, self.layers = mods, layers
        self.batches, self.r_of, self.progress = batches, r_of, progress
        self.blocks: list = []
        self.chunks: list = []
        self.workspace_bytes = 0
        if len(layers) < 2:
            return
        # shapes on one example, for the working-memory estimate
        with torch.no_grad():
            acts = self._forward(prob.batches[0][0][:1])[0]
        item = prob.theta.element_size()
        self.channels = [acts["z"][k].shape[1] for k in range(len(layers))]

        # bytes per (packed tangent, example) of the stage that starts at layer k: a few copies of
        # z_k and of l's receptive fields (K_l times its input), and the C_k unpacked tangents of
        # every later layer
        def stage(j):
            return acts["z"][j][0].numel() + acts["a"][j + 1][0].numel() * (layers[j + 1].K + 1)

        last = len(layers) - 1
        self.per_q = [
            3 * item * (stage(k) + self.channels[k] * max([stage(j) for j in range(k + 1, last)], default=0))
            for k in range(last)
        ]
        # per example, also the patches of each stage's first layer (Q_k per channel of z_k)
        per_example = max(
            q
            + item * layers[k].Q * acts["z"][k][0].numel() // (1 if layers[k].depthwise else self.channels[k])
            for k, q in enumerate(self.per_q)
        )
        # and the chunk's forward pass with its graph (the adjoints δ come from its backward)
        forward = 2 * saved_bytes_per_example(prob)
        n_max = max([x.shape[0] for x, _ in batches], default=1)
        rows = max(1, min(n_max, int(budget // (per_example + forward))))
        self.budget = budget
        self.chunks = split_rows(batches, rows)
        rows = max([x.shape[0] for x, _ in self.chunks], default=0)
        self.workspace_bytes = int(rows * (per_example + forward))

    def add_into(self, H) -> None:
        """H[0:o_l, o_l:o_l + |W_l|] += the residual blocks, over all chunks of examples."""
        self.blocks = [None] + [H[: L.offset, L.offset : L.offset + L.w_numel] for L in self.layers[1:]]
        if len(self.layers) < 2:
            return
        for x, y in progress_bar(
            self.chunks,
            total=len(self.chunks),
            progress=self.progress,
            desc="hessext.hessian: residual blocks (packed tangents)",
        ):
            self._add_batch(x, self.r_of(x, y))

    def _forward(self, x, r=None):
        """Inputs a_l and outputs z_l of every weight layer and, given r = ∂ℓ/∂f, the adjoints δ_l."""
        a, z, out = _run(self.mods, self.layers, x)
        deltas = None
        if r is not None:
            deltas = torch.autograd.grad((out * r.to(out.dtype)).sum(), z)
        return {"a": a, "z": [t.detach() for t in z], "delta": deltas}, out

    def _add_batch(self, x, r):
        acts, _ = self._forward(x, r)
        layers, L_count = self.layers, len(self.layers)
        # the modules between weight layers k and k+1, linearised at this batch's primal
        ops = [
            _linearize(self.mods[layers[k].idx + 1 : layers[k + 1].idx], acts["z"][k])
            for k in range(L_count - 1)
        ]
        push = [_compose(o) for o in ops]
        # for the unpacked tangents, a convolution followed by an average pool is one strided
        # convolution: lin[j] is layer j's map on them, push_after[j] the modules after it
        lin, push_after = list(layers), list(push)
        for j in range(1, L_count - 1):
            nxt = self.mods[layers[j].idx + 1]
            if layers[j].is_conv and isinstance(nxt, (nn.AvgPool1d, nn.AvgPool2d)):
                fused = layers[j].then_avg_pool(nxt)
                if fused is not None:
                    lin[j], push_after[j] = fused, _compose(ops[j][1:])
        n = x.shape[0]
        alpha = 1.0 / self.n
        for k in range(L_count - 1):
            Lm = layers[k]
            C = self.channels[k]
            pat = None if Lm.depthwise else Lm.patches(acts["a"][k])  # [n, Q, *S_m]
            qc = max(1, min(Lm.Q, int(self.budget // max(1, self.per_q[k] * n))))
            for q0 in range(0, Lm.Q, qc):
                q1 = min(Lm.Q, q0 + qc)
                q = torch.arange(q0, q1, device=x.device)
                # packed tangents of z_m: channel c of T_q is the response to θ_m[c, q] (for a
                # convolution or Linear patch q, the same for every channel; for a BatchNorm x̂_c or 1)
                if Lm.depthwise:
                    U = Lm.packed_tangents(acts["a"][k], q0, q1)
                else:
                    T = pat[:, q0:q1].movedim(1, 0).unsqueeze(2)
                    U = T.expand(q1 - q0, n, C, *T.shape[3:])
                # packed phase: through the modules and the depthwise layers (BatchNorm) up to the
                # next convolution or Linear, whose weight gradient per input channel gives exact
                # entries; from there on the P_m tangents are unpacked
                j, D = k, None
                while j + 1 < L_count:
                    Ln = layers[j + 1]
                    U = push[j](U)  # tangents of a_{j+1}
                    col_ch = Ln.input_channel_of_weight(C)  # [w_numel of layer j+1]
                    cols = torch.arange(Ln.w_numel, device=x.device)
                    rows = Lm.offset + Lm.rows(col_ch[None, :], q[:, None])
                    more = j + 2 < L_count
                    if Ln.depthwise:
                        G = Ln.wgrad(acts["delta"][j + 1], U)  # [qc, C_{j+1}]
                        self.blocks[j + 1][rows, cols[None, :].expand_as(rows)] += G.to(torch.float64) * alpha
                        j += 1
                        if more:
                            U = Ln.linear_part(U)  # still packed
                        continue
                    # G [qc, w_numel]; D: the unpacked P_m tangents of z_{j+1}, (q, c) at (q - q0) * C + c
                    G, D = Ln.wgrad_and_unpack(acts["delta"][j + 1], U, C, more and lin[j + 1] is Ln)
                    if more and lin[j + 1] is not Ln:
                        D = lin[j + 1].wgrad_and_unpack(None, U, C, True)[1]
                    self.blocks[j + 1][rows, cols[None, :].expand_as(rows)] += G.to(torch.float64) * alpha
                    j += 1
                    break
                if D is None or j + 1 >= L_count:
                    continue
                cq = torch.arange(C, device=x.device)
                rows = Lm.offset + Lm.rows(cq[None, :], q[:, None]).reshape(-1)
                for jj in range(j, L_count - 1):
                    D = push_after[jj](D)
                    G = layers[jj + 1].wgrad(acts["delta"][jj + 1], D)
                    self.blocks[jj + 1].index_add_(0, rows, G.to(torch.float64), alpha=alpha)
                    if jj + 2 < L_count:
                        D = lin[jj + 1].linear_part(D)

    def mirror_into_strip(self, acc, j0, j1):
        """Inside the diagonal tile of acc (= H[0:j1, j0:j1]), add the mirror images of the
        residual blocks below its diagonal (the tile's upper part holds the residual alone)."""
        for L, block in zip(self.layers[1:], self.blocks[1:]):
            o_l, w_n = L.offset, L.w_numel
            c0, c1 = max(j0, o_l), min(j1, o_l + w_n)
            k0, k1 = j0, min(j1, o_l)
            if c1 > c0 and k1 > k0:
                acc[c0:c1, k0 - j0 : k1 - j0] += block[k0:k1, c0 - o_l : c1 - o_l].T


class LayerJacobianGGNFiller(GGNFiller):
    """The GGN filler with per-example Jacobians computed from the layer inputs (no torch.func)."""

    def __init__(self, prob, batches, n_total, budget, strip_width):
        self.mods, self.layers = _weight_layers(prob)
        super().__init__(prob, batches, n_total, budget, strip_width)

    def _jacobian_bytes_per_example(self, prob, C):
        """Beside the Jacobian, per example: the forward's graph (kept for the C backward passes)
        and about as much again for one backward's gradients of the activations (measured), its
        adjoints of every layer output, the largest layer's receptive fields (the per-example
        weight gradient's operand) and a row of J being concatenated."""
        x0 = prob.batches[0][0][:1]
        with torch.no_grad():
            a, z, _ = _run(self.mods, self.layers, x0)
        fields = [
            L.in_ch * L.K * z_l[0].numel() // L.out_ch if getattr(L, "is_conv", False) else 0
            for L, z_l in zip(self.layers, z)
        ]
        item = prob.theta.element_size()
        adjoints = sum(z_l[0].numel() for z_l in z)
        return int(2 * saved_bytes_per_example(prob) + item * (adjoints + max(fields) + 2 * prob.num_params))

    def _jacobian(self, x):
        return per_example_jacobian(self.prob, self.mods, self.layers, x)


class PiecewiseCNNFiller(LayerJacobianGGNFiller):
    """Exact Hessian of a piecewise-linear CNN: the GGN's factor products plus the residual blocks
    from packed tangents (computed once, into the result, before the strips)."""

    def __init__(self, prob, batches, n_total, budget, strip_width, progress=False):
        super().__init__(prob, batches, n_total, budget, strip_width)
        self.residual = PackedTangentResidual(
            prob, self.mods, self.layers, batches, n_total, self._loss_adjoint, budget, progress
        )
        # the residual pass runs before the factors are computed: the larger of the two peaks
        self.workspace_bytes = max(self.workspace_bytes, self.residual.workspace_bytes)

    def _loss_adjoint(self, x, y):
        with torch.enable_grad():
            out = self.prob.forward(self.prob.theta, x).detach().requires_grad_(True)
            (r,) = torch.autograd.grad(self.prob.per_example_losses(out, y).sum(), out)
        return r

    def prepare(self, H) -> None:
        self.residual.add_into(H)
        trim_heap()  # the residual pass's temporaries, before the factors' (other sizes)
        super().prepare(H)

    def fill(self, acc, j0, j1):
        self.residual.mirror_into_strip(acc, j0, j1)  # before the GGN is added to the tile
        super().fill(acc, j0, j1)
