"""Dense assembly of the Hessian (or GGN) of the MEAN training loss, in float64, strip by strip.

    L(θ) = (1/n) Σ_i ℓ(f(x_i; θ), y_i) + R(θ),    H = ∇²L,    GGN = (1/n) Σ_i J_iᵀ Λ_i J_i + ∇²R

The P×P result is built in column strips of width W: strip s holds H[0:j1, j0:j1] (the tiles on
and above the diagonal); the strictly lower tiles are mirrored from it, so only the upper
triangle is ever computed. A strip is summed over all mini-batches in float64 before it is
stored, which is what makes strips the unit of progress, of the on-disk format and of resuming.

Four ways to fill a strip, all exact:

* MLPs (an nn.Sequential of Linear layers and elementwise modules), Hessian and GGN: closed-form
  layer-pair blocks, one matrix product per pair with the example count as inner dimension
  (hessext/curvature/_structured.py).
* GGN of other models: per-example factors F (rows f_ik = J_iᵀ b_ik with Λ_i = Σ_k s_k b_ik b_ikᵀ, s = ±1) so that
  GGN = (1/n) Σ s_k f fᵀ, and the strip is F[:, 0:j1]ᵀ F[:, j0:j1]: a matrix product with the
  factor count as inner dimension, computed at the model's precision and added into the float64
  strip by hessext.ops.gemm_accumulate.
* Piecewise-linear CNNs (Conv1d/Conv2d/Linear layers, ReLU-like modules, pools, Flatten), Hessian:
  these GGN factor products plus the residual blocks between layers, from forward tangents packed
  over output channels (hessext/curvature/_piecewise_cnn.py); their GGN takes the per-example
  Jacobians from the layer inputs.
* Exact Hessian of other models: batched reverse-over-reverse Hessian-vector products (torch.func vmap of vjp of
  grad) on the strip's unit vectors, i.e. W columns of H per pass over the data, accumulated in
  float64 across mini-batches.

Format of ``out=`` (numpy-loadable, nothing else needed to read it):
  manifest.json               {"format": "hessext-strips-v1", "P", "strip_width", "fingerprint", "kind",
                               "done": [[j0, j1], ...], "info": {...}}
  strip_<j0>_<j1>.npy         float64 [j1, j1 - j0] = H[0:j1, j0:j1] (upper triangle incl. diagonal)
Reassemble with ``hessext.curvature.load_strips(out)`` or by hand: H[:j1, j0:j1] = strip; then
H[j0:j1, :j0] = strip[:j0].T. A rerun with the same arguments skips the strips listed as done.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import grad, jacrev, jvp, vjp, vmap

from hessext import ops
from hessext._memory import empty_large
from hessext._model_guard import preserved
from hessext.curvature._problem import Problem, build_problem, regularizer_hessian_add
from hessext.curvature.hessian import Hessian, HessianOperator

__all__ = ["hessian", "ggn", "hessian_operator", "load_strips", "HessianTooLargeError"]

FORMAT = "hessext-strips-v1"


class HessianTooLargeError(MemoryError):
    """The dense [P, P] float64 matrix does not fit in the memory available."""


# Tests set this to a callable(strip_index) to inject an interruption after a strip is stored.
_after_strip_hook = None


# --------------------------------------------------------------------------- memory
def available_bytes(device: torch.device) -> int:
    """Memory a new allocation can get on ``device`` right now (CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _check_size(who: str, P: int, device, max_bytes, extra: int = 0, what: str = "") -> None:
    """Raise HessianTooLargeError unless the [P, P] float64 result (+ ``extra`` bytes the chosen
    path holds beside it, described by ``what``) fits in the memory available."""
    need = 8 * P * P + extra
    avail = available_bytes(device)
    limit = avail if max_bytes is None else min(avail, int(max_bytes))
    if need > limit:
        raise HessianTooLargeError(
            f"{who}: the dense float64 Hessian for P = {P} parameters{what} needs {need:,} bytes "
            f"({need / 2**30:.2f} GiB) but only {limit:,} bytes ({limit / 2**30:.2f} GiB) are available"
            f"{' (max_bytes)' if max_bytes is not None and max_bytes < avail else ''} on {device}. "
            f"Use the matrix-free path instead: hessext.hessian_operator(model, loss_fn, data) gives "
            f"H @ V, Lanczos eigenpairs, a Hutchinson trace and CG solves without the dense matrix.")


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


def _symmetrize_(D: torch.Tensor, tile: int = 128) -> None:
    """D ← (D + Dᵀ)/2 in place, tile pair by tile pair (no [W, W] temporaries, cache-sized
    transposes)."""
    W = D.shape[0]
    for i0 in range(0, W, tile):
        for k0 in range(i0, W, tile):
            a, b = D[i0:i0 + tile, k0:k0 + tile], D[k0:k0 + tile, i0:i0 + tile]
            s = (a + b.T) / 2
            a.copy_(s)
            b.copy_(s.T)


def _split_rows(batches, max_rows: int):
    out = []
    for x, y in batches:
        for s in range(0, x.shape[0], max_rows):
            out.append((x[s:s + max_rows], y[s:s + max_rows]))
    return out


# --------------------------------------------------------------------------- distributed
def _dist_context(distributed):
    """(rank, world) when assembling data-parallel over torch.distributed, else (0, 1)."""
    import torch.distributed as dist
    if distributed is False or not (dist.is_available() and dist.is_initialized()):
        if distributed is True:
            raise ValueError("hessian: distributed=True but torch.distributed is not initialised")
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _shard(batches, rank, world):
    if world == 1:
        return batches
    if len(batches) < world:  # too few mini-batches to share: split their rows
        rows = max(1, math.ceil(max(x.shape[0] for x, _ in batches) / world))
        batches = _split_rows(batches, rows)
    return batches[rank::world]


def _all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# --------------------------------------------------------------------------- strip fillers
class _HVPFiller:
    """Columns j0:j1 of the loss Hessian from batched Hessian-vector products."""

    def __init__(self, prob: Problem, batches, n_total: int, budget: int):
        self.prob, self.n = prob, n_total
        per_example = _saved_bytes_per_example(prob)
        # a vmapped column of the double backward keeps ~4 copies of the saved activations
        # plus a few P-vectors
        per_col_row = 4.0 * per_example
        max_rows = max(x.shape[0] for x, _ in batches)
        rows = max(1, min(max_rows, int(budget / (per_col_row * 4))))
        self.batches = _split_rows(batches, rows)
        rows = max(x.shape[0] for x, _ in self.batches)
        P = prob.num_params
        self.cols = int(max(1, min(P, budget / (per_col_row * rows + 6 * P * prob.theta.element_size()))))

    def fill(self, acc: torch.Tensor, j0: int, j1: int) -> None:
        P, dtype, dev = self.prob.num_params, self.prob.dtype, self.prob.device
        prob = self.prob
        for x, y in self.batches:
            # reverse-over-reverse: one forward+backward per mini-batch and strip, then the
            # backward of the gradient is vmapped over unit vectors (measured here faster than
            # forward-over-reverse, and without forward-mode's first-call warm-up)
            _, hvp = vjp(grad(lambda th: prob.batch_loss_sum(th, x, y)), prob.theta)
            for c0 in range(j0, j1, self.cols):
                c1 = min(j1, c0 + self.cols)
                V = torch.zeros(c1 - c0, P, dtype=dtype, device=dev)
                V[:, c0:c1].diagonal().fill_(1.0)
                cols, = vmap(hvp)(V)                        # [c, P] = H_batch[:, c0:c1]ᵀ
                acc[:, c0 - j0:c1 - j0].add_(cols[:, :j1].T, alpha=1.0 / self.n)


class _GGNFiller:
    """Strips of (1/n) Σ_i J_iᵀ Λ_i J_i from per-example factors (a symmetric rank-k update)."""

    def __init__(self, prob: Problem, batches, n_total: int, budget: int):
        self.prob, self.n = prob, n_total
        P, item = prob.num_params, prob.theta.element_size()
        x0, _ = batches[0]
        with torch.no_grad():
            C = prob.forward(prob.theta, x0[:1]).numel()
        self.C = C
        # rows per factor chunk: the Jacobian [rows, C, P] and the factors [rows, C, P]
        rows = max(1, int(budget / (3 * C * P * item)))
        self.batches = _split_rows(batches, rows)
        total_rows = sum(x.shape[0] for x, _ in batches)
        self.cache = [self._factors(x, y) for x, y in self.batches] if 2 * total_rows * C * P * item <= budget else None

    def _jacobian(self, x):
        """Per-example Jacobians of the flattened outputs [N, C, P] at the model precision."""
        prob = self.prob

        def f_one(th, xi):
            return prob.forward(th, xi.unsqueeze(0)).reshape(-1)

        return vmap(jacrev(f_one), in_dims=(None, 0))(prob.theta, x)

    def _factors(self, x, y):
        """(F_plus [k+, P], F_minus [k-, P]) at the model precision with Σ_i J_iᵀΛ_iJ_i = F₊ᵀF₊ − F₋ᵀF₋."""
        prob, theta = self.prob, self.prob.theta
        N = x.shape[0]
        J = self._jacobian(x)                                           # [N, C, P]
        with torch.no_grad():
            out = prob.forward(theta, x)
        out_shape = out.shape[1:]
        o64 = out.detach().reshape(N, -1).to(torch.float64)
        y64 = y.to(torch.float64) if y.is_floating_point() else y
        # Λ_i = ∂²ℓ_i/∂f_i² by double backward (each ℓ_i depends on f_i only, so the Hessian of
        # Σ_i ℓ_i w.r.t. all outputs is block diagonal and C backward passes give every block)
        with torch.enable_grad():
            o = o64.detach().requires_grad_(True)
            total = prob.per_example_losses(o.view(N, *out_shape), y64).sum()
            g, = torch.autograd.grad(total, o, create_graph=True)
            rows = [torch.autograd.grad(g[:, c].sum(), o, retain_graph=c + 1 < self.C, allow_unused=True)[0]
                    for c in range(self.C)]
        Lam = torch.stack([torch.zeros_like(o64) if r is None else r for r in rows], 1).detach()  # [N, C, C]
        Lam = (Lam + Lam.transpose(1, 2)) / 2
        w, U = torch.linalg.eigh(Lam)                                   # Λ_i = U diag(w) Uᵀ
        scale = w.abs().amax(1, keepdim=True).clamp_min(1e-300)
        Bm = U * w.abs().sqrt().unsqueeze(1)                            # [N, C, K]: columns b_ik
        F = torch.einsum("nck,ncp->nkp", Bm.to(J.dtype), J)             # [N, K, P]
        keep_pos = (w > 1e-14 * scale).reshape(-1)
        keep_neg = (w < -1e-14 * scale).reshape(-1)
        F = F.reshape(N * self.C, -1)
        return F[keep_pos].contiguous(), (F[keep_neg].contiguous() if bool(keep_neg.any()) else None)

    def fill(self, acc: torch.Tensor, j0: int, j1: int) -> None:
        chunks = self.cache if self.cache is not None else (self._factors(x, y) for x, y in self.batches)
        for Fp, Fm in chunks:
            ops.gemm_accumulate(acc, Fp[:, :j1], Fp[:, j0:j1], 1.0 / self.n)
            if Fm is not None:
                ops.gemm_accumulate(acc, Fm[:, :j1], Fm[:, j0:j1], -1.0 / self.n)


# --------------------------------------------------------------------------- out= / resume
def _fingerprint(prob: Problem, kind: str, W: int) -> str:
    h = hashlib.sha256()
    h.update(f"{kind}|{prob.num_params}|{W}|{prob.dtype}|{prob.n}|{prob.info['loss']}|"
             f"{prob.info['regularizer']}|{prob.names}".encode())
    h.update(prob.theta.detach().to(torch.float64).cpu().numpy().tobytes())
    for x, y in prob.batches:
        h.update(f"{tuple(x.shape)}{tuple(y.shape)}".encode())
        h.update(np.float64(x.double().sum().item()).tobytes())
        h.update(np.float64(y.double().sum().item()).tobytes())
    return h.hexdigest()


def _strip_path(out: Path, j0: int, j1: int) -> Path:
    return out / f"strip_{j0:07d}_{j1:07d}.npy"


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def load_strips(out) -> torch.Tensor:
    """Reassemble the float64 [P, P] matrix from a finished ``out=`` directory."""
    out = Path(out)
    man = json.loads((out / "manifest.json").read_text())
    if man.get("format") != FORMAT:
        raise ValueError(f"load_strips: {out} is not a {FORMAT} directory")
    P, W = man["P"], man["strip_width"]
    done = {tuple(s) for s in man["done"]}
    H = np.zeros((P, P))
    for j0 in range(0, P, W):
        j1 = min(P, j0 + W)
        if (j0, j1) not in done:
            raise ValueError(f"load_strips: strip [{j0}, {j1}) is missing in {out}: the assembly did not finish")
        S = np.load(_strip_path(out, j0, j1))
        H[:j1, j0:j1] = S
        H[j0:j1, :j0] = S[:j0].T
    return torch.from_numpy(H)


# --------------------------------------------------------------------------- driver
def _assemble(kind, model, loss_fn, data, *, params, regularizer, dtype, memory_budget, out,
              progress, strip_width, max_bytes, distributed, method="auto"):
    who = kind
    t_start = time.perf_counter()
    with preserved(model):
        prob = build_problem(model, loss_fn, data, params=params, regularizer=regularizer, dtype=dtype, who=who)
        P, dev = prob.num_params, prob.device
        budget = int(memory_budget) if memory_budget is not None else max(8 * P * P, 256 * 2**20)
        if budget <= 0:
            raise ValueError(f"{who}: memory_budget must be positive, got {memory_budget}")
        _check_size(who, P, dev, max_bytes)
        rank, world = _dist_context(distributed)
        local = _shard(prob.batches, rank, world)
        n_local = sum(x.shape[0] for x, _ in local)
        n_total = int(_all_reduce(torch.tensor([float(n_local)], dtype=torch.float64), world).item()) if world > 1 else prob.n
        if strip_width is None:
            # wide enough that the strip products are real matrix products, narrow enough that a
            # strip buffer stays a small fraction of the budget and progress is saved often
            strip_width = int(max(64, min(P, 1024, budget // max(1, 8 * P * 4))))
        W = int(strip_width)
        if W < 1:
            raise ValueError(f"{who}: strip_width must be >= 1, got {strip_width}")
        from hessext.curvature import _piecewise_cnn, _structured
        structured = _structured.supports(prob)
        if method not in ("auto", "structured", "hvp"):
            raise ValueError(f"{who}: method must be 'auto', 'structured' or 'hvp', got {method!r}")
        cnn = not structured and _piecewise_cnn.supports(prob)
        if method == "structured" and not (structured or cnn):
            raise ValueError(f"{who}: method='structured' needs an nn.Sequential of Linear layers and "
                             f"elementwise activations, or of Conv1d/Conv2d/Linear layers, piecewise-linear "
                             f"activations, Max/AvgPool, global average pools, BatchNorm with running "
                             f"statistics and Flatten, differentiated in all parameters; use 'hvp'")
        if structured and method != "hvp":
            exact = kind == "hessian"
            filler = _structured.MLPBlocks(prob, local, n_total, budget, exact=exact)
            how = "closed-form layer blocks (MLP): one product per layer pair" + ("" if exact else ", GGN")
        elif cnn and method != "hvp":
            if kind == "hessian":
                # this path also holds its float64 residual blocks (at most P²/2 entries)
                _check_size(who, P, dev, max_bytes, extra=4 * P * P,
                            what=" with the packed-tangent residual blocks beside it")
                # its residual is computed up front: a bar of its own (on a terminal, rank 0)
                filler = _piecewise_cnn.PiecewiseCNNFiller(prob, local, n_total, budget,
                                                           progress=None if progress and rank == 0 else False)
                how = "GGN factor products + packed-tangent residual (piecewise-linear CNN)"
            else:
                filler = _piecewise_cnn.LayerJacobianGGNFiller(prob, local, n_total, budget)
                how = "products of per-example GGN factors (Jacobians from the layer inputs)"
        elif kind == "ggn":
            filler, how = _GGNFiller(prob, local, n_total, budget), "products of per-example GGN factors"
        else:
            filler, how = _HVPFiller(prob, local, n_total, budget), "vmap(vjp(grad)) column blocks (reverse-over-reverse HVPs)"

        strips = [(j0, min(P, j0 + W)) for j0 in range(0, P, W)]
        # huge pages (hessext/_memory.py): benchmark (a) 0.55 -> 0.42 s in fresh processes
        H = empty_large(P, P, torch.float64, dev)
        done: set = set()
        out_dir = Path(out) if out is not None else None
        info = {"kind": kind, **prob.info, "n": n_total, "strip_width": W, "world_size": world,
                "accumulation": "float64", "method": how}
        if out_dir is not None:
            fp = _fingerprint(prob, kind, W)
            man_path = out_dir / "manifest.json"
            if man_path.exists():
                man = json.loads(man_path.read_text())
                if man.get("format") != FORMAT or man.get("fingerprint") != fp:
                    raise ValueError(f"{who}: out={out_dir} holds strips of a different assembly (other "
                                     f"model, data, loss, dtype or strip width); use an empty directory")
                for j0, j1 in man["done"]:
                    S = torch.from_numpy(np.load(_strip_path(out_dir, j0, j1))).to(dev)
                    H[:j1, j0:j1] = S
                    done.add((j0, j1))
            elif rank == 0:
                out_dir.mkdir(parents=True, exist_ok=True)
                man = {"format": FORMAT, "P": P, "strip_width": W, "fingerprint": fp, "kind": kind,
                       "done": [], "info": info}
                _write_json_atomic(man_path, man)
            if world > 1:
                import torch.distributed as dist
                dist.barrier()
            info["resumed_strips"] = len(done)

        todo = [s for s in strips if s not in done]
        bar = None
        if progress and rank == 0 and sys.stderr.isatty() and todo:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(strips), initial=len(done), desc=f"hessext.{kind}", unit="strip")
        try:
            for idx, (j0, j1) in enumerate(strips):
                if (j0, j1) in done:
                    continue
                acc = H[:j1, j0:j1]         # accumulate in place: no extra strip buffer
                if not getattr(filler, "overwrites", False):
                    acc.zero_()
                filler.fill(acc, j0, j1)
                if world > 1:
                    acc.copy_(_all_reduce(acc.contiguous(), world))
                regularizer_hessian_add(prob, acc, slice(0, j1), slice(j0, j1))
                # the diagonal tile is symmetric only up to the order of rounding: symmetrise it
                # before storing, so the stored strip is exactly the final matrix's
                _symmetrize_(acc[j0:j1])
                if out_dir is not None and rank == 0:
                    np.save(_strip_path(out_dir, j0, j1), acc.cpu().numpy())
                    man["done"].append([j0, j1])
                    _write_json_atomic(man_path, man)
                done.add((j0, j1))
                if bar is not None:
                    bar.update(1)
                if _after_strip_hook is not None:
                    _after_strip_hook(idx)
        finally:
            if bar is not None:
                bar.close()
        # the lower tiles are the mirror of the upper ones (in square tiles: a transposed copy of
        # a whole strip at once walks memory with a large stride and is several times slower)
        for j0, j1 in strips:
            for i0 in range(0, j0, 256):
                i1 = min(j0, i0 + 256)
                H[j0:j1, i0:i1] = H[i0:i1, j0:j1].T
        info["seconds"] = time.perf_counter() - t_start
        return Hessian(H, info)


def hessian(model, loss_fn, data, *, params=None, regularizer=None, dtype=torch.float64,
            memory_budget=None, out=None, progress=True, strip_width=None, max_bytes=None,
            distributed=None, method="auto") -> Hessian:
    """The exact Hessian of the MEAN training loss (1/n) Σ_i ℓ_i(θ) + R(θ), dense float64 [P, P].

    model: nn.Module, evaluated in eval mode (dropout off, BatchNorm on running statistics) on
      copies of its parameters; it is left exactly as it was.
    loss_fn(outputs, targets): per-example losses [N] (reduction='none', summed over output axes),
      or a mean- or sum-reducing loss (then evaluated one example at a time).
    data: (inputs [N, ...], targets [N, ...]) or an iterable of such mini-batches (any sizes).
    params: None (all parameters requiring grad), names or parameter tensors; the Hessian is over
      them in named_parameters() order.
    regularizer: e.g. hessext.regularizers.L2.from_weight_decay(λ, n) adds ∇²R = (λ/n) I.
    dtype: precision of the model's products (float64 default; float32 runs the model in float32);
      accumulation across strips and mini-batches is always float64.
    memory_budget: bytes of working memory beyond the result (default: the result's own size,
      8·P² bytes, but at least 256 MiB: smaller chunks cost time). A guide for the chunk
      sizes, not a hard cap: for the toolbox CNN's 4.4 MB Hessian on 1,000 inputs, a 4.4 MB
      budget peaks at about 40 MB and takes 3.9 s instead of 1.3 s.
    out: directory; finished strips are written as they complete and a rerun resumes (format in
      the module docstring). max_bytes: cap for the size check (default: memory available).
    distributed: None (use torch.distributed when initialised), True or False; each rank sums
      its shard of the mini-batches and strips are all-reduced, every rank gets the matrix.
    method: 'auto' (default: 'structured' where it applies, else 'hvp'), 'structured' (closed-form
      layer-pair blocks as matrix products; an nn.Sequential of Linear layers and elementwise
      modules such as ReLU, tanh, softplus, GELU, Dropout; or GGN factor products + a residual
      from packed tangents for an nn.Sequential of Conv1d/Conv2d (groups=1)/Linear layers,
      ReLU/LeakyReLU/Identity/Dropout, Max/AvgPool1d/2d, global average pools, BatchNorm1d/2d
      and Flatten, e.g. hessext.models.SSHCNN) or 'hvp' (the general path: batched
      reverse-over-reverse Hessian-vector products).
      All give the same matrix (to rounding); info['method'] says which ran.
    Raises HessianTooLargeError (a MemoryError) before allocating if the matrix would not fit.
    """
    return _assemble("hessian", model, loss_fn, data, params=params, regularizer=regularizer,
                     dtype=dtype, memory_budget=memory_budget, out=out, progress=progress,
                     strip_width=strip_width, max_bytes=max_bytes, distributed=distributed,
                     method=method)


def ggn(model, loss_fn, data, *, params=None, regularizer=None, dtype=torch.float64,
        memory_budget=None, out=None, progress=True, strip_width=None, max_bytes=None,
        distributed=None, loss=None) -> Hessian:
    """The generalised Gauss-Newton matrix (1/n) Σ_i J_iᵀ Λ_i J_i + ∇²R, dense float64 [P, P],
    with J_i = ∂f(x_i)/∂θ and Λ_i = ∂²ℓ_i/∂f² taken exactly from loss_fn (so cross-entropy gives
    the Fisher, diag(p) − ppᵀ, and MSE its constant Λ; any loss works, including ones with an
    indefinite Λ). ``loss`` ('ce', 'mse' or None) is accepted for clarity and recorded only.
    Same arguments and guarantees as ``hessian``."""
    if loss not in (None, "ce", "mse"):
        raise ValueError(f"ggn: loss must be 'ce', 'mse' or None, got {loss!r}")
    H = _assemble("ggn", model, loss_fn, data, params=params, regularizer=regularizer,
                  dtype=dtype, memory_budget=memory_budget, out=out, progress=progress,
                  strip_width=strip_width, max_bytes=max_bytes, distributed=distributed)
    if loss is not None:
        H.info["loss_kind"] = loss
    return H


def hessian_operator(model, loss_fn, data, *, params=None, regularizer=None, dtype=torch.float64,
                     block: int = 64) -> HessianOperator:
    """The matrix-free Hessian of the mean training loss: V [P, M] ↦ H V by batched
    forward-over-reverse products (at ``dtype``; sums over mini-batches in float64), ``block``
    columns at a time. The model's parameters are copied now; later changes to the model do not
    affect the operator."""
    with preserved(model):
        prob = build_problem(model, loss_fn, data, params=params, regularizer=regularizer,
                             dtype=dtype, who="hessian_operator")
    theta, n = prob.theta, prob.n

    def matmat(V: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(V.shape, dtype=torch.float64, device=V.device)
        with preserved(model):
            for c0 in range(0, V.shape[1], block):
                Vc = V[:, c0:c0 + block].T.to(prob.dtype)
                for x, y in prob.batches:
                    g = lambda th: grad(prob.batch_loss_sum)(th, x, y)
                    cols = vmap(lambda v: jvp(g, (theta,), (v,))[1])(Vc)
                    out[:, c0:c0 + block].add_(cols.T, alpha=1.0 / n)
            if prob.regularizer is not None:
                theta64 = theta.to(torch.float64)
                if hasattr(prob.regularizer, "hessian_diagonal"):
                    out += prob.regularizer.hessian_diagonal(theta64).unsqueeze(1) * V
                else:
                    out += vmap(lambda v: jvp(grad(prob.regularizer.value), (theta64,), (v,))[1])(V.T).T
        return out

    return HessianOperator(matmat, prob.num_params, device=prob.device, info={"kind": "hessian operator", **prob.info})
