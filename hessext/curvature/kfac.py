"""K-FAC and EK-FAC (docs/structured-curvature.md): per-layer Kronecker-factored curvature.

For a Linear layer y = W a + b with the bias as an appended 1, a' = [a, 1], and the gradient g of
the layer output, the per-example gradient is g a'ᵀ and the layer's block of the Fisher/GGN is
approximated by

    A ⊗ S,    A = E[a' a'ᵀ]  [I', I'],    S = E[g gᵀ]  [O, O]          (K-FAC)

eigendecomposed once, A = Q_A diag(λ_A) Q_Aᵀ, S = Q_S diag(λ_S) Q_Sᵀ. In the basis Q_A ⊗ Q_S the
block is diagonal with eigenvalues λ_S,o λ_A,i. EK-FAC (George et al. 2018, Kronfluence's
"ekfac") keeps the basis and refits the eigenvalues to the per-example gradients,

    Λ*[o, i] = E[((Q_Sᵀ G_n Q_A)[o, i])²],    G_n = Σ_t g_{n,t} a'_{n,t}ᵀ,

i.e. Λ* is the exact diagonal of the curvature in the K-FAC eigenbasis. For a Linear layer
(T = 1) G_n is rank one, so Λ* costs O(d²) per example (hessext.ops.ekfac_correction).

Convolutions use K-FAC "expand" (Grosse & Martens 2016; Eschenhagen et al. 2023): the T output
positions act as extra examples, A = (1/(nT)) Σ_{n,t} a'_{n,t} a'_{n,t}ᵀ over the unfolded input
patches and S = (1/n) Σ_{n,t} g_{n,t} g_{n,t}ᵀ, so that A ⊗ S has the scale of the per-example
Fisher (T × Kronfluence's mean-over-positions factors; EK-FAC's refitted eigenvalues do not
depend on this scale). Linear layers over a sequence axis are treated the same way.

What g is (``fisher``):

* ``'empirical'``: g = ∂ℓ(f(x_n), y_n)/∂y, the data labels' gradients (Kronfluence's
  use_empirical_fisher=True; the curvature is E[g_n g_nᵀ], the empirical Fisher).
* ``'exact-ggn'``: with Λ_n = ∂²ℓ/∂f² = B_n B_nᵀ, g runs over the C back-propagated columns of
  B_n, so E[Σ_c g gᵀ] is the layer's exact GGN output factor (exact for a single Linear layer
  under MSE).
* ``'mc'``: g = back-propagated B_n z, z ~ N(0, I), ``mc_samples`` draws per example, seeded:
  an unbiased Monte-Carlo estimate of the exact-GGN factors (for cross-entropy the GGN equals
  the true Fisher, so this has the expectation of sampling labels from the model).

Layers: nn.Linear, nn.Conv1d, nn.Conv2d (groups = 1, zero padding), each called once per forward
with its own weight. Any other chosen parameter is refused (pass ``params=`` to restrict).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from hessext import ops
from hessext._internal.guard import preserved
from hessext._internal.progress import progress_bar
from hessext.curvature import distributed as dp
from hessext.curvature.chain import layer_chain
from hessext.curvature.problem import output_loss_derivatives
from hessext.curvature.structured import Block, StructuredCurvature
from hessext.per_sample.capture import Capture, Layer, capture

__all__ = ["kfac", "ekfac", "KFAC", "KroneckerBlock", "FISHERS", "layer_rows", "last_layer"]

FISHERS = ("empirical", "mc", "exact-ggn")
# examples × positions × features held at once when unfolding or rotating (~64 MB in float32)
_ROW_ELEMS = 1 << 24


class KroneckerBlock(Block):
    """One layer's block (Q_A ⊗ Q_S) diag(λ) (Q_A ⊗ Q_S)ᵀ in the layout W' [O, I'] (weight
    columns, then the bias column), row-major.

    qa: [I', I'] and qs: [O, O] orthonormal eigenvectors (columns); lam: [O, I'] eigenvalues
    (K-FAC: λ_S λ_Aᵀ; EK-FAC: refitted), all float64. ``factor_eigenvalues`` = (λ_A, λ_S)."""

    def __init__(self, name, index, qa, qs, lam, *, factor_eigenvalues, weight, bias, kind, positions):
        self.name, self.index = name, index
        self.qa, self.qs, self.lam = qa, qs, lam
        self.factor_eigenvalues = factor_eigenvalues
        self.weight, self.bias, self.kind, self.positions = weight, bias, kind, positions
        self.O, self.Ia = lam.shape

    def eigenvalues(self):
        return self.lam.reshape(-1)

    def _as_mats(self, X):
        return X.T.reshape(X.shape[1], self.O, self.Ia)

    def to_eigenbasis(self, X):
        Y = self.qs.T @ self._as_mats(X) @ self.qa
        return Y.reshape(X.shape[1], -1).T

    def from_eigenbasis(self, Y):
        X = self.qs @ self._as_mats(Y) @ self.qa.T
        return X.reshape(Y.shape[1], -1).T

    def eigenvectors(self, which):
        o, i = which // self.Ia, which % self.Ia
        return (self.qs[:, o].unsqueeze(1) * self.qa[:, i].unsqueeze(0)).reshape(self.size, -1)

    def diagonal(self):
        return (self.qs.square() @ self.lam @ self.qa.square().T).reshape(-1)

    @property
    def memory_bytes(self):
        return 8 * (self.qa.numel() + self.qs.numel() + self.lam.numel() + self.O + self.Ia)

    def describe(self) -> str:
        """The layer, its factor sizes and its eigenvalue range."""
        lam = self.lam
        return (
            f"{self.kind} [O={self.O}, I'={self.Ia}] (weight {self.weight}, bias {self.bias}, "
            f"T={self.positions}), eigenvalues {float(lam.min()):.3g} .. {float(lam.max()):.3g}"
        )


@dataclass
class _Spec:
    """A chosen kernel layer: names, sizes and the block's positions in θ."""

    name: str
    weight: str | None
    bias: str | None
    kind: str
    O: int
    I: int  # weight columns (0 when the weight is not chosen)
    index: torch.Tensor
    kernel: tuple = ()
    positions: int = 1

    @property
    def append_one(self) -> bool:
        return self.bias is not None


@dataclass
class _Accumulators:
    A: list = field(default_factory=list)
    S: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # Σ N·T (A's count) per layer
    n: int = 0


def last_layer(model: nn.Module) -> list[str]:
    """Names of the parameters of the model's last Linear/Conv layer: the one its layer chain
    (hessext/curvature/chain.py) applies last, else the last one registered. For
    ``params=`` of any curvature (e.g. the exact dense Hessian of the last layer)."""
    from_chain = layer_chain(model)
    modules = from_chain if from_chain is not None else list(model.modules())
    names = {id(m): n for n, m in model.named_modules()}
    for m in reversed(modules):
        for sub in reversed(list(m.modules())):
            if isinstance(sub, (nn.Linear, nn.Conv1d, nn.Conv2d)) and id(sub) in names:
                prefix = names[id(sub)]
                out = [f"{prefix}.{k}" if prefix else k for k, p in sub.named_parameters(recurse=False)]
                if out:
                    return out
    raise ValueError("last_layer: the model has no Linear or Conv layer")


def layer_rows(layer: Layer, spec: _Spec, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """(a [k, T, I], d [k, T, O]) of examples ``rows`` of a captured layer: its inputs (a
    convolution's unfolded patches; no columns when the weight is not chosen) and the gradients
    of its outputs."""
    if spec.kind == "linear":
        a, d = layer.a[rows], layer.d[rows]
    else:
        stride, padding, dilation, _ = layer.conv_args
        x, g = layer.a[rows], layer.d[rows]
        a = F.unfold(x, spec.kernel, dilation=dilation, padding=padding, stride=stride).transpose(1, 2)
        d = g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2)
    if spec.weight is None:
        a = a[..., :0]
    return a, d


def _specs(cap: Capture, caller: str) -> list[_Spec]:
    """The chosen kernel layers of a capture, or a clear refusal of anything else."""
    if cap.fallback:
        name = cap.fallback[0]
        raise ValueError(
            f"{caller}: params: {name!r} is not the weight or bias of a Linear, Conv1d or Conv2d "
            f"layer called once per forward with its own parameters ({len(cap.fallback)} such "
            f"parameter(s): {cap.fallback[:4]}); K-FAC covers only those layers. Restrict params= "
            "(e.g. hessext.curvature.last_layer(model)) or use hessext.diag_ggn"
        )
    numel = dict(zip(cap.names, (int(torch.Size(s).numel()) for s in cap.shapes)))
    specs = []
    for layer in cap.layers:
        m = layer.module
        first = layer.weight or layer.bias
        assert first is not None  # the capture keeps layers with a chosen parameter only
        module_name = first.rsplit(".", 1)[0] if "." in first else ""
        kernel: tuple = ()
        if isinstance(m, nn.Linear):
            kind, O, I, T = "linear", m.out_features, m.in_features, layer.a.shape[1]
        else:
            conv = cast(nn.Conv2d, m)
            if conv.groups != 1:
                raise ValueError(
                    f"{caller}: params: layer {module_name!r} is a grouped convolution "
                    f"(groups={conv.groups}); K-FAC supports groups=1 only"
                )
            kernel = _kernel_size(conv)
            kind, O, I, T = "conv", conv.out_channels, conv.weight[0].numel(), int(layer.d[0, 0].numel())
        Iw = I if layer.weight is not None else 0
        Ia = Iw + (1 if layer.bias is not None else 0)
        index = torch.empty(O, Ia, dtype=torch.long)
        if layer.weight is not None:
            assert numel[layer.weight] == O * I
            index[:, :I] = cap.offsets[layer.weight] + torch.arange(O * I).view(O, I)
        if layer.bias is not None:
            index[:, Iw] = cap.offsets[layer.bias] + torch.arange(O)
        specs.append(_Spec(module_name, layer.weight, layer.bias, kind, O, Iw, index.reshape(-1), kernel, T))
    return specs


def _kernel_size(conv: nn.Module) -> tuple[int, int]:
    """(kH, kW) of a Conv1d (kH = 1) or Conv2d."""
    w = cast(torch.Tensor, conv.weight)
    return (1, int(w.shape[2])) if w.dim() == 3 else (int(w.shape[2]), int(w.shape[3]))


def _example_chunk(spec: _Spec, n: int, replicas: int) -> int:
    per = spec.positions * (max(spec.I, 1) + replicas * spec.O)
    return max(1, min(n, _ROW_ELEMS // max(1, per)))


class _Pass:
    """One pass over the mini-batches of this rank: for each, the captured layer inputs and the
    output gradients of every replica (1 for the empirical Fisher; C for the exact GGN; the
    MC draws), kept when they fit in the memory budget so that EK-FAC's second pass reuses them."""

    def __init__(self, prob, model, batches, fisher, mc_samples, seed, params, dtype, caller, budget):
        self.prob, self.model, self.batches = prob, model, batches
        self.fisher, self.mc_samples, self.seed = fisher, mc_samples, seed
        self.params, self.dtype, self.caller, self.budget = params, dtype, caller, budget
        self.cache: list | None = []
        self.cached_bytes = 0

    def _seeds(self, b: int, x, y) -> list[torch.Tensor]:
        """Vectors t [N, C] whose back-propagation through the outputs gives the replicas."""
        prob = self.prob
        with torch.no_grad():
            out = prob.forward(prob.theta, x)
        _, Lam = output_loss_derivatives(prob, out, y)  # [N, C, C] float64
        w, U = torch.linalg.eigh(Lam)
        scale = float(w.abs().max()) if w.numel() else 0.0
        if float(w.min()) < -1e-10 * max(scale, 1e-300):
            raise ValueError(
                f"{self.caller}: fisher={self.fisher!r} needs a loss convex in the outputs; ∂²ℓ/∂f² has "
                f"an eigenvalue {float(w.min()):.3g} < 0. Use fisher='empirical'"
            )
        B = U * w.clamp_min(0).sqrt().unsqueeze(1)  # [N, C, K]: Λ = B Bᵀ
        shape = out.shape
        if self.fisher == "exact-ggn":
            keep = (w.clamp_min(0) > 1e-14 * max(scale, 1e-300)).any(0)
            return [B[:, :, k].reshape(shape).to(self.dtype) for k in range(B.shape[2]) if bool(keep[k])]
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + b)
        z = torch.randn(self.mc_samples, x.shape[0], B.shape[2], generator=gen, dtype=torch.float64)
        return [
            torch.einsum("nck,nk->nc", B, z[r].to(B.device)).reshape(shape).to(self.dtype)
            for r in range(self.mc_samples)
        ]

    def _capture(self, b: int, x, y):
        """(layers of the first replica, [d of every replica per layer])."""
        if self.fisher == "empirical":
            cap = capture(self.caller, self.model, self.prob.loss, x, y, self.params, None, self.dtype)
            return cap, [[layer.d] for layer in cap.layers]
        caps = []
        for t in self._seeds(b, x, y):
            caps.append(
                capture(
                    self.caller,
                    self.model,
                    lambda out, s: (out.reshape(out.shape[0], -1) * s.reshape(s.shape[0], -1)).sum(1),
                    x,
                    t,
                    self.params,
                    None,
                    self.dtype,
                )
            )
        return caps[0], [[c.layers[j].d for c in caps] for j in range(len(caps[0].layers))]

    def __iter__(self):
        if self.cache is not None and len(self.cache) == len(self.batches):
            yield from self.cache
            return
        fresh = self.cache is not None and not self.cache
        for b, (x, y) in enumerate(self.batches):
            cap, ds = self._capture(b, x, y)
            cap.state, cap.inputs, cap.targets = {}, cap.inputs[:0], cap.targets[:0]  # keep only a, d
            item = (cap, ds)
            if fresh and self.cache is not None:
                size = sum(t.numel() * t.element_size() for layer in cap.layers for t in (layer.a,))
                size += sum(d.numel() * d.element_size() for per in ds for d in per)
                self.cached_bytes += size
                if self.cached_bytes <= self.budget:
                    self.cache.append(item)
                else:
                    self.cache = None
            yield item


def _build(
    caller,
    model,
    loss_fn,
    data,
    *,
    corrected,
    fisher,
    params,
    regularizer,
    dtype,
    mc_samples,
    seed,
    batch_size,
    memory_budget,
    distributed,
    progress,
):
    t_start = time.perf_counter()
    if fisher not in FISHERS:
        raise ValueError(f"{caller}: fisher must be one of {FISHERS}, got {fisher!r}")
    if not (isinstance(mc_samples, int) and not isinstance(mc_samples, bool) and mc_samples >= 1):
        raise ValueError(f"{caller}: mc_samples must be a positive integer, got {mc_samples!r}")
    if not (isinstance(memory_budget, (int, float)) and memory_budget >= 0):
        raise ValueError(f"{caller}: memory_budget must be a number of bytes >= 0, got {memory_budget!r}")
    reg_shift = 0.0
    if regularizer is not None:
        diag = getattr(regularizer, "hessian_diagonal", None)
        coefficient = getattr(regularizer, "coefficient", None)
        if diag is None or coefficient is None:
            raise ValueError(
                f"{caller}: regularizer must be hessext.regularizers.L2 (its Hessian c·I keeps the "
                f"Kronecker eigenbasis), got {regularizer!r}"
            )
        reg_shift = float(coefficient)
    with preserved(model):
        prob, local, rank, world = dp.local_problem(
            model,
            loss_fn,
            data,
            params=params,
            regularizer=regularizer,
            dtype=dtype,
            batch_size=batch_size,
            distributed=distributed,
            who=caller,
        )
        dtype = prob.dtype
        run = _Pass(prob, model, local, fisher, mc_samples, seed, params, dtype, caller, memory_budget)
        specs: list[_Spec] | None = None
        acc = _Accumulators()
        replicas = mc_samples if fisher == "mc" else 1
        bar = progress_bar(
            total=len(local) * (2 if corrected else 1), desc=caller, progress=progress if rank == 0 else False
        )
        try:
            for cap, ds in run:
                if specs is None:
                    specs = _specs(cap, caller)
                    dev = cap.device
                    acc.A = [
                        torch.zeros(s.I + s.append_one, s.I + s.append_one, dtype=torch.float64, device=dev)
                        for s in specs
                    ]
                    acc.S = [torch.zeros(s.O, s.O, dtype=torch.float64, device=dev) for s in specs]
                    acc.rows = [0] * len(specs)
                N = cap.n
                acc.n += N
                for j, (spec, layer) in enumerate(zip(specs, cap.layers)):
                    step = _example_chunk(spec, N, len(ds[j]))
                    for s in range(0, N, step):
                        rows = slice(s, min(N, s + step))
                        a, _ = layer_rows(layer, spec, rows)
                        a2 = a.reshape(-1, a.shape[-1])
                        acc.rows[j] += a2.shape[0]
                        for r, d in enumerate(ds[j]):
                            dr = _grad_rows(d[rows], spec)
                            ops.kfac_factors(
                                a2 if r == 0 else a2[:0],
                                dr.reshape(-1, spec.O),
                                acc.A[j],
                                acc.S[j],
                                spec.append_one,
                            )
                bar.update(1)
            if specs is None:  # this rank had no data (more ranks than examples)
                raise ValueError(f"{caller}: rank {rank} of {world} received no mini-batch; use fewer ranks")
            n_total = acc.n
            if world > 1:
                flat = torch.cat(
                    [torch.tensor([float(acc.n)] + [float(r) for r in acc.rows], dtype=torch.float64)]
                )
                dp.all_reduce(flat, world)
                n_total, acc.rows = int(flat[0]), [int(v) for v in flat[1:]]
                for t in acc.A + acc.S:
                    dp.all_reduce(t, world)
            blocks_raw = []
            for j in range(len(specs)):
                A = acc.A[j] / max(acc.rows[j], 1)
                S = acc.S[j] / (n_total * replicas)
                la, qa = torch.linalg.eigh((A + A.T) / 2)
                ls, qs = torch.linalg.eigh((S + S.T) / 2)
                for t in (qa, qs):
                    dp.broadcast(t, world)
                la, ls = _clean(la, dtype), _clean(ls, dtype)
                blocks_raw.append([qa, qs, la, ls])
            if corrected:
                lams = [torch.zeros(s.O, s.I + s.append_one, dtype=torch.float64, device=dev) for s in specs]
                for cap, ds in run:
                    N = cap.n
                    for j, (spec, layer) in enumerate(zip(specs, cap.layers)):
                        qa, qs = (t.to(dtype) for t in blocks_raw[j][:2])
                        step = _example_chunk(spec, N, len(ds[j]))
                        for s in range(0, N, step):
                            rows = slice(s, min(N, s + step))
                            a, _ = layer_rows(layer, spec, rows)
                            g = torch.cat([_grad_rows(d[rows], spec) for d in ds[j]])
                            ops.ekfac_correction(a, g, qa, qs, lams[j], spec.append_one)
                    bar.update(1)
                for t in lams:
                    dp.all_reduce(t, world)
        finally:
            bar.close()
    blocks = []
    for j, spec in enumerate(specs):
        qa, qs, la, ls = blocks_raw[j]
        lam = (
            _clean(lams[j] / (n_total * replicas), dtype, squared=True) if corrected else torch.outer(ls, la)
        )
        blocks.append(
            KroneckerBlock(
                spec.name,
                spec.index.to(dev),
                qa,
                qs,
                lam + reg_shift,
                factor_eigenvalues=(la, ls),
                weight=spec.weight,
                bias=spec.bias,
                kind=spec.kind,
                positions=spec.positions,
            )
        )
    kind = "ekfac" if corrected else "kfac"
    what = {
        "empirical": "the empirical Fisher E[g gᵀ] of the per-example loss gradients",
        "exact-ggn": "the generalised Gauss-Newton matrix (exact loss-Hessian factors)",
        "mc": f"the GGN/Fisher from {mc_samples} Monte-Carlo draw(s) per example",
    }[fisher]
    description = (
        (
            "EK-FAC (K-FAC eigenbasis, eigenvalues refitted to the per-example gradients)"
            if corrected
            else "K-FAC (A ⊗ S per layer)"
        )
        + f" of {what}, block-diagonal over layers"
        + (f", + {reg_shift:g}·I from the L2 regulariser" if reg_shift else "")
    )
    info = {
        **prob.info,
        "kind": kind,
        "fisher": fisher,
        "description": description,
        "n": n_total,
        "world_size": world,
        "conv_convention": "K-FAC expand (positions as examples; A averaged over n·T rows, S over n)",
        "bias": "appended 1 in A",
        "mc_samples": mc_samples if fisher == "mc" else None,
        "seed": seed if fisher == "mc" else None,
        "activations_cached": run.cache is not None,
        "rounding": "eigenvalues below d·ε·max (factors) or (d·ε)²·max (EK-FAC) are set to 0",
        "seconds": time.perf_counter() - t_start,
    }
    return KFAC(blocks, prob.num_params, info, device=dev, dtype=dtype)


def _clean(values: torch.Tensor, dtype: torch.dtype, *, squared: bool = False) -> torch.Tensor:
    """Eigenvalues of a Gram matrix with those below its rounding level set to 0: d·ε·max for a
    factor (d its size, ε of the passes' dtype), (d·ε)²·max for EK-FAC's squared rotated
    gradients. They are not determined by the data (e.g. the direction along which
    cross-entropy gradients sum to zero): zero says so, and a solve then needs damping > 0."""
    level = values.shape[-1] * torch.finfo(dtype).eps
    cut = (level**2 if squared else level) * float(values.max()) if values.numel() else 0.0
    return torch.where(values > cut, values, torch.zeros_like(values))


def _grad_rows(d: torch.Tensor, spec: _Spec) -> torch.Tensor:
    """A captured output gradient as rows [k, T, O] (a convolution's [k, O, *S] transposed)."""
    if spec.kind == "linear":
        return d
    return d.reshape(d.shape[0], d.shape[1], -1).transpose(1, 2)


class KFAC(StructuredCurvature):
    """K-FAC or EK-FAC curvature (``info['kind']``) of a model's training loss: one
    KroneckerBlock per Linear/Conv layer. Built by ``hessext.kfac`` / ``hessext.ekfac``; the
    surface of every hessext curvature (``@``, ``solve``, ``top_eigenpairs``, ``trace``,
    ``logdet``, ``memory_bytes``, ``describe``) plus the rank-one influence products
    (``query_factors``, ``pair_scores``) that hessext.influence uses."""

    def __init__(self, blocks, num_params, info, *, device=None, dtype=torch.float32):
        super().__init__(blocks, num_params, info, device=device)
        self.compute_dtype = dtype
        self._by_params = {(b.weight, b.bias): b for b in blocks}
        self._cast: dict = {}

    def _block_for(self, layer: Layer) -> KroneckerBlock:
        return self._by_params[(layer.weight, layer.bias)]

    def _spec(self, b: KroneckerBlock, layer: Layer) -> _Spec:
        I = b.Ia - (1 if b.bias is not None else 0)
        kernel = _kernel_size(cast(nn.Conv2d, layer.module)) if b.kind == "conv" else ()
        return _Spec(b.name, b.weight, b.bias, b.kind, b.O, I, b.index, kernel, b.positions)

    def _bases(self, b: KroneckerBlock, dtype: torch.dtype):
        """(Q_A, Q_S) of a block at ``dtype`` (converted once per dtype)."""
        key = (b.name, dtype)
        if key not in self._cast:
            self._cast[key] = (b.qa.to(dtype), b.qs.to(dtype))
        return self._cast[key]

    def _rotated(self, cap: Capture, rows: slice, b: KroneckerBlock, layer: Layer):
        """(ã [k, T, I'], d̃ [k, T, O]): a layer's inputs and output gradients in the
        block's eigenbases, at the capture's dtype."""
        spec = self._spec(b, layer)
        a, d = layer_rows(layer, spec, rows)
        qa, qs = self._bases(b, a.dtype)
        at = a @ qa[: spec.I]
        if spec.append_one:
            at += qa[spec.I]
        return at, d @ qs

    def _check_capture(self, cap: Capture, caller: str):
        if cap.fallback or {(layer.weight, layer.bias) for layer in cap.layers} != set(self._by_params):
            raise ValueError(
                f"{caller}: hessian is a {self.info.get('kind')} curvature of other layers than the "
                "model's chosen parameters (another model, or other params=)"
            )

    def query_factors(self, cap: Capture, damping, *, rank: int | None = None, caller: str = "influence"):
        """The preconditioned query gradients per layer in the Kronecker eigenbasis,
        X̃_q = (Q_Sᵀ G_q Q_A) / (Λ + δ) [m, O, I'] (compute dtype), laid out for
        ``pair_scores``; with ``rank``, their best rank-r factors (L [m, O, r], R [m, r, I']).
        Returns (queries, the relative Frobenius error of the compression per query [m] float64,
        over all layers; zeros without ``rank``)."""
        self._check_capture(cap, caller)
        shifted = self._damped(damping, caller)
        out = {}
        total = torch.zeros(cap.n, dtype=torch.float64)
        lost = torch.zeros(cap.n, dtype=torch.float64)
        for layer in cap.layers:
            b = self._block_for(layer)
            j = self.blocks.index(b)
            at, dt = self._rotated(cap, slice(0, cap.n), b, layer)
            inverse = (1.0 / shifted[j]).reshape(b.O, b.Ia).to(at.dtype)
            if rank is None and b.positions == 1:  # rank one: straight into the product's layout
                out[b.name] = _QueryBlock.rank_one(at[:, 0], dt[:, 0], inverse)
                continue
            X = torch.empty(cap.n, b.O, b.Ia, dtype=at.dtype, device=at.device)
            ops.linear_weight_grad(at.contiguous(), dt.contiguous(), X)
            X *= inverse
            if rank is None or rank >= min(b.O, b.Ia):
                out[b.name] = _QueryBlock.dense(X, b.positions)
                if rank is not None:
                    total += X.double().square().sum((1, 2)).cpu()
                continue
            U, s, Vh = torch.linalg.svd(X.double(), full_matrices=False)
            out[b.name] = _QueryBlock.low_rank(
                (U[:, :, :rank] * s[:, :rank].unsqueeze(1)).to(X.dtype), Vh[:, :rank, :].to(X.dtype)
            )
            total += s.square().sum(1).cpu()
            lost += s[:, rank:].square().sum(1).cpu()
        error = (lost / total.clamp_min(1e-300)).sqrt()
        return out, error

    def pair_scores(
        self, cap: Capture, queries: dict, reg_grad: torch.Tensor | None = None, caller: str = "influence"
    ):
        """Σ_layers g_nᵀ X_q for the training examples of a capture and the queries of
        ``query_factors``: [k, m] at the compute dtype (rotated rank-one gradients for Linear
        layers, rotated per-example gradients for convolutions and sequences; see _QueryBlock).
        reg_grad: ∇R [P] added to every training gradient."""
        self._check_capture(cap, caller)
        scores = None
        for layer in cap.layers:
            b = self._block_for(layer)
            Q = queries[b.name]
            step = Q.rows_per_chunk(b, cap.n)
            part = []
            for s in range(0, cap.n, step):
                rows = slice(s, min(cap.n, s + step))
                at, dt = self._rotated(cap, rows, b, layer)
                part.append(Q.scores(at, dt))
            contrib = torch.cat(part)
            if reg_grad is not None:
                r = b.to_eigenbasis(reg_grad[b.index].to(torch.float64).unsqueeze(1))[:, 0]
                contrib = contrib + Q.reg_scores(r.reshape(b.O, b.Ia).to(contrib.dtype)).unsqueeze(0)
            scores = contrib if scores is None else scores + contrib
        assert scores is not None
        return scores


class _QueryBlock:
    """One layer's preconditioned query gradients X̃ [m, O, I'] in the eigenbasis, stored in the
    layout its training-side product wants:

    * T = 1 (rank-one training gradients d̃ ã ᵀ): score[n, q] = Σ_o d̃_no Σ_i X̃_qoi ã_ni is one
      GEMM over the larger of I' and O (ã [k, I'] @ X̃ as [I', m·O], or d̃ [k, O] @ X̃ as
      [O, m·I']) and a multiply-sum over the other: 2·k·m·O·I' flops, the pairwise floor;
    * T > 1: the rotated per-example gradients [k, O·I'] @ X̃ as [O·I', m];
    * rank r (L [m, O, r], R [m, r, I']): Σ_t (d̃_tᵀ L_q)(R_q ã_t), 2·k·T·m·r·(O + I') flops."""

    def __init__(self, kind, operand, m, O, Ia, factors=None):
        self.kind, self.operand, self.m, self.O, self.Ia, self.factors = kind, operand, m, O, Ia, factors

    @classmethod
    def dense(cls, X: torch.Tensor, positions: int) -> _QueryBlock:
        m, O, Ia = X.shape
        if positions > 1:
            return cls("rows", X.reshape(m, O * Ia).T.contiguous(), m, O, Ia)
        if Ia >= O:
            return cls("via_a", X.reshape(m * O, Ia).T.contiguous(), m, O, Ia)
        return cls("via_d", X.permute(1, 0, 2).reshape(O, m * Ia).contiguous(), m, O, Ia)

    @classmethod
    def rank_one(cls, at: torch.Tensor, dt: torch.Tensor, inverse: torch.Tensor) -> _QueryBlock:
        """X̃_q = (d̃_q ã_qᵀ) ∘ K for rank-one queries (at [m, I'], dt [m, O], K [O, I']), formed
        directly in the T = 1 product's layout."""
        m, Ia = at.shape
        O = dt.shape[1]
        if Ia >= O:  # [I', m, O], scaled in place: one m·P buffer
            operand = at.T.unsqueeze(2) * dt.unsqueeze(0)
            operand *= inverse.T.unsqueeze(1)
            return cls("via_a", operand.reshape(Ia, m * O), m, O, Ia)
        operand = dt.T.unsqueeze(2) * at.unsqueeze(0)  # [O, m, I']
        operand *= inverse.unsqueeze(1)
        return cls("via_d", operand.reshape(O, m * Ia), m, O, Ia)

    @classmethod
    def low_rank(cls, L: torch.Tensor, R: torch.Tensor) -> _QueryBlock:
        m, O, _ = L.shape
        return cls("low_rank", None, m, O, R.shape[2], (L.contiguous(), R.contiguous()))

    def rows_per_chunk(self, b: KroneckerBlock, n: int) -> int:
        """Training examples per product: the [k, m·max(O, I')] intermediate near _ROW_ELEMS."""
        if self.kind == "rows":
            per = b.positions * (self.O + self.Ia) + self.O * self.Ia
        elif self.kind == "low_rank":
            per = b.positions * (self.O + self.Ia + 2 * self.m * self.factors[0].shape[2])
        else:
            per = self.m * max(self.O, self.Ia)
        return max(1, min(n, _ROW_ELEMS // max(1, per)))

    def scores(self, at: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """[k, m] for rotated inputs at [k, T, I'] and gradients dt [k, T, O]."""
        k = at.shape[0]
        if self.kind == "via_a":
            Y = at[:, 0] @ self.operand  # [k, m·O]
            return torch.bmm(Y.view(k, self.m, self.O), dt[:, 0].unsqueeze(2))[:, :, 0]
        if self.kind == "via_d":
            Y = dt[:, 0] @ self.operand  # [k, m·I']
            return torch.bmm(Y.view(k, self.m, self.Ia), at[:, 0].unsqueeze(2))[:, :, 0]
        if self.kind == "rows":
            G = torch.empty(k, self.O, self.Ia, dtype=at.dtype, device=at.device)
            ops.linear_weight_grad(at.contiguous(), dt.contiguous(), G)
            return G.reshape(k, -1) @ self.operand
        L, R = self.factors
        left = torch.einsum("kto,qor->ktqr", dt, L)
        right = torch.einsum("kti,qri->ktqr", at, R)
        return (left * right).sum((1, 3))

    def reg_scores(self, rq: torch.Tensor) -> torch.Tensor:
        """[m]: a rotated [O, I'] gradient (the regulariser's) scored against every query."""
        if self.kind == "low_rank":
            L, R = self.factors
            return torch.einsum("oi,qor,qri->q", rq, L, R)
        if self.kind == "rows":
            return rq.reshape(-1) @ self.operand
        if self.kind == "via_a":
            return (rq.T.reshape(self.Ia, 1, self.O) * self.operand.view(self.Ia, self.m, self.O)).sum((0, 2))
        return (rq.reshape(self.O, 1, self.Ia) * self.operand.view(self.O, self.m, self.Ia)).sum((0, 2))


def kfac(
    model: nn.Module,
    loss_fn,
    data,
    *,
    fisher: str = "empirical",
    params=None,
    regularizer=None,
    dtype: torch.dtype | None = None,
    mc_samples: int = 1,
    seed: int = 0,
    batch_size: int | None = 512,
    memory_budget: float = 1 << 30,
    distributed: bool | None = None,
    progress: bool | None = None,
) -> KFAC:
    """K-FAC curvature of the mean training loss: A ⊗ S per Linear/Conv layer (module docstring).

    model, loss_fn, data: as hessext.hessian (data: (inputs, targets) or an iterable of
    mini-batches; loss_fn per-example or a verified mean/sum). fisher: 'empirical' (data
    labels), 'exact-ggn' (exact loss-Hessian factors: C backward passes) or 'mc' (``mc_samples``
    seeded draws). params: the parameters (default all trainable; every one must belong to a
    Linear/Conv layer; see ``last_layer``). regularizer: hessext.regularizers.L2 adds c·I
    (exactly: the eigenbasis is kept). dtype: of the passes (default the model's); the factors
    accumulate in float64 (hessext.ops.kfac_factors). batch_size: mini-batches are split to at
    most this many examples (bounds the memory of a pass; None: as given).
    distributed: data-parallel over an initialised torch.distributed group (None: when one is).
    Returns a KFAC (damping is applied at solve time: a number δ, or 'heuristic')."""
    return _build(
        "kfac",
        model,
        loss_fn,
        data,
        corrected=False,
        fisher=fisher,
        params=params,
        regularizer=regularizer,
        dtype=dtype,
        mc_samples=mc_samples,
        seed=seed,
        batch_size=batch_size,
        memory_budget=memory_budget,
        distributed=distributed,
        progress=progress,
    )


def ekfac(
    model: nn.Module,
    loss_fn,
    data,
    *,
    fisher: str = "empirical",
    params=None,
    regularizer=None,
    dtype: torch.dtype | None = None,
    mc_samples: int = 1,
    seed: int = 0,
    batch_size: int | None = 512,
    memory_budget: float = 1 << 30,
    distributed: bool | None = None,
    progress: bool | None = None,
) -> KFAC:
    """EK-FAC curvature: K-FAC's eigenbasis with the eigenvalues refitted to the per-example
    gradients, Λ* = E[(Q_Sᵀ G_n Q_A)²] (George et al. 2018; Kronfluence's 'ekfac'). A second
    pass over the data (or the activations of the first, kept while they fit in
    ``memory_budget`` bytes). Arguments as ``kfac``."""
    return _build(
        "ekfac",
        model,
        loss_fn,
        data,
        corrected=True,
        fisher=fisher,
        params=params,
        regularizer=regularizer,
        dtype=dtype,
        mc_samples=mc_samples,
        seed=seed,
        batch_size=batch_size,
        memory_budget=memory_budget,
        distributed=distributed,
        progress=progress,
    )
