"""Dense assembly of the Hessian (or GGN) of the MEAN training loss, in float64, strip by strip.

    L(θ) = (1/n) Σ_i ℓ(f(x_i; θ), y_i) + R(θ),    H = ∇²L,    GGN = (1/n) Σ_i J_iᵀ Λ_i J_i + ∇²R

The P×P result is built in column strips of width W: strip s holds H[0:j1, j0:j1] (the tiles on
and above the diagonal); the strictly lower tiles are mirrored from it, so only the upper
triangle is ever computed. A strip is summed over all mini-batches in float64 before it is
stored, which is what makes strips the unit of progress, of the on-disk format and of resuming.

Four ways to fill a strip, all exact:

* MLPs (an nn.Sequential of Linear layers and elementwise modules), Hessian and GGN: closed-form
  layer-pair blocks, one matrix product per pair with the example count as inner dimension
  (hessext/curvature/fillers/mlp_blocks.py).
* GGN of other models: per-example factors F (rows f_ik = J_iᵀ b_ik with
  Λ_i = Σ_k s_k b_ik b_ikᵀ, s = ±1) so that GGN = (1/n) Σ s_k f fᵀ, and the strip is F[:, 0:j1]ᵀ
  F[:, j0:j1]: a matrix product with the
  factor count as inner dimension, computed at the model's precision and added into the float64
  strip by hessext.ops.gemm_accumulate.
* Piecewise-linear CNNs (Conv1d/Conv2d/Linear layers, ReLU-like modules, pools, Flatten), Hessian:
  these GGN factor products plus the residual blocks between layers, from forward tangents packed
  over output channels (hessext/curvature/fillers/piecewise_cnn.py); their GGN takes the per-example
  Jacobians from the layer inputs.
* Exact Hessian of other models: batched reverse-over-reverse Hessian-vector products
  (torch.func vmap of vjp of grad) on the strip's unit vectors, i.e. W columns of H per pass over
  the data, accumulated in
  float64 across mini-batches.

``out=DIR`` writes finished strips as they complete and a rerun resumes them (the format and
what is verified: hessext/curvature/strips.py).
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch.func import grad, jvp, vmap

from hessext._internal.contract import NOT_FINITE_HINT, all_finite, check_finite_result
from hessext._internal.guard import check_model, grad_mode, preserved
from hessext._internal.memory import available_bytes, empty_large, trim_heap, zeros_large
from hessext._internal.progress import progress_bar
from hessext.curvature.distributed import all_reduce, shard
from hessext.curvature.distributed import context as distributed_context
from hessext.curvature.errors import HessianTooLargeError
from hessext.curvature.exact import Hessian, HessianOperator
from hessext.curvature.fillers import mlp_blocks, piecewise_cnn
from hessext.curvature.fillers.ggn import GGNFiller
from hessext.curvature.fillers.hvp import HVPFiller
from hessext.curvature.problem import build_problem, regularizer_hessian_add
from hessext.curvature.strips import StripStore, fingerprint

__all__ = ["hessian", "ggn", "hessian_operator", "default_budget", "eigh_bytes"]

# Tests set this to a callable(strip_index) to inject an interruption after a strip is stored.
_after_strip_hook = None


# --------------------------------------------------------------------------- memory
# a budget below this many bytes of working memory is not worth shrinking to: the matrix products
# degenerate into many tiny ones
_MIN_BUDGET = 1 << 20


def default_budget(P: int) -> int:
    """memory_budget when none is given: an eighth of the float64 result, at least 64 MiB (the
    toolbox CNN on 1,000 inputs: the same time as with 256 MiB, a third of the memory)."""
    return max(P * P, 64 << 20)


def eigh_bytes(P: int) -> int:
    """Memory Hessian.eigh() needs beside the matrix: LAPACK's working copy of it and the
    eigenvectors (dsyevr; 16·P² bytes + O(P))."""
    return 16 * P * P + 64 * P


def _too_large(who, P, device, need, limit, parts, limited_by_user, shrunk) -> HessianTooLargeError:
    detail = ", ".join(f"{what} {nbytes / 2**30:.2f} GiB" for what, nbytes in parts if nbytes)
    return HessianTooLargeError(
        f"{who}: the dense float64 Hessian for P = {P} parameters needs {need:,} bytes "
        f"({need / 2**30:.2f} GiB: {detail}) but only {limit:,} bytes ({limit / 2**30:.2f} GiB) are "
        f"available{' (max_bytes)' if limited_by_user else ''} on {device}"
        f"{', with the working memory at its minimum' if shrunk else ''}. Use the matrix-free path "
        f"instead: hessext.hessian_operator(model, loss_fn, data) gives H @ V, Lanczos eigenpairs, a "
        f"Hutchinson trace and CG solves without the dense matrix; or differentiate fewer "
        f"parameters (params=...)."
    )


def _limit(device, max_bytes) -> tuple[int, bool]:
    avail = available_bytes(device)
    if max_bytes is None:
        return avail, False
    return min(avail, int(max_bytes)), int(max_bytes) < avail


def _symmetrize_(D: torch.Tensor, tile: int = 128) -> None:
    """D ← (D + Dᵀ)/2 in place, tile pair by tile pair (no [W, W] temporaries, cache-sized
    transposes)."""
    W = D.shape[0]
    for i0 in range(0, W, tile):
        for k0 in range(i0, W, tile):
            a, b = D[i0 : i0 + tile, k0 : k0 + tile], D[k0 : k0 + tile, i0 : i0 + tile]
            s = (a + b.T) / 2
            a.copy_(s)
            b.copy_(s.T)


# --------------------------------------------------------------------------- driver
def _chooser(kind, prob, local, n_total, method, who, progress):
    """The filler for the path that will run, as a function of (budget, strip width) → (filler,
    what info['method'] says); building a filler plans its memory and allocates nothing large."""
    # why each closed form does not apply (None: it does); reported in info['method']
    mlp_why = mlp_blocks.blocker(prob)
    structured = mlp_why is None
    cnn_why = piecewise_cnn.blocker(prob) if not structured else None
    cnn = not structured and cnn_why is None
    if prob.interacting:  # neither closed form (both are sums over examples) applies
        mlp_why = cnn_why = "the examples interact"
        structured = cnn = False
    if method == "structured" and not (structured or cnn):
        raise ValueError(
            f"{who}: method='structured' needs an nn.Sequential of Linear layers and "
            f"elementwise activations, or of Conv1d/Conv2d/Linear layers, piecewise-linear "
            f"activations, Max/AvgPool, global average pools, BatchNorm with running "
            f"statistics and Flatten, differentiated in all parameters; use 'hvp'"
        )
    if structured and method != "hvp":
        exact = kind == "hessian"
        how = "closed-form layer blocks (MLP): one product per layer pair" + ("" if exact else ", GGN")
        return lambda budget, W: (mlp_blocks.MLPBlocks(prob, local, n_total, budget, W, exact=exact), how)
    if cnn and method != "hvp":
        if kind == "hessian":
            how = "GGN factor products + packed-tangent residual (piecewise-linear CNN)"
            return lambda budget, W: (
                piecewise_cnn.PiecewiseCNNFiller(prob, local, n_total, budget, W, progress=progress),
                how,
            )
        how = "products of per-example GGN factors (Jacobians from the layer inputs)"
        return lambda budget, W: (piecewise_cnn.LayerJacobianGGNFiller(prob, local, n_total, budget, W), how)
    suffix = (
        f" (no closed form: not an MLP: {mlp_why}; not a piecewise-linear CNN: {cnn_why})"
        if method == "auto"
        else ""
    )
    if kind == "ggn":
        how = "products of per-example GGN factors" + suffix
        return lambda budget, W: (GGNFiller(prob, local, n_total, budget, W), how)
    how = "vmap(vjp(grad)) column blocks (reverse-over-reverse HVPs)"
    if prob.interacting:
        how += (
            f" of the mean loss over the mini-batches as given, none split ({prob.interacting}: "
            "the examples of a batch interact)"
        )
    how += suffix
    # examples that interact: the batches as given, none split
    return lambda budget, W: (
        HVPFiller(prob, local, n_total, budget, W, split=not prob.interacting),
        how,
    )


def _assemble(
    kind,
    model,
    loss_fn,
    data,
    *,
    params,
    regularizer,
    dtype,
    memory_budget,
    out,
    progress,
    strip_width,
    max_bytes,
    distributed,
    method="auto",
    eigh=False,
):
    who = kind
    t_start = time.perf_counter()
    check_model(model, who, examples_may_interact=kind == "hessian")
    with preserved(model):
        prob = build_problem(
            model,
            loss_fn,
            data,
            params=params,
            regularizer=regularizer,
            dtype=dtype,
            who=who,
            examples_may_interact=kind == "hessian",  # the HVP path needs no per-example terms
        )
        P, dev = prob.num_params, prob.device
        if memory_budget is not None and not memory_budget > 0:
            raise ValueError(f"{who}: memory_budget must be positive, got {memory_budget}")
        if strip_width is not None and int(strip_width) < 1:
            raise ValueError(f"{who}: strip_width must be >= 1, got {strip_width}")
        if method not in ("auto", "structured", "hvp"):
            raise ValueError(f"{who}: method must be 'auto', 'structured' or 'hvp', got {method!r}")
        rank, world = distributed_context(distributed, who)
        if prob.interacting and world > 1 and len(prob.batches) < world:
            raise ValueError(
                f"{who}: {prob.interacting}: the examples of a batch interact, so the batches must "
                f"not be split, but {len(prob.batches)} mini-batches cannot be shared by {world} "
                "ranks whole; pass at least one mini-batch per rank"
            )
        local = shard(prob.batches, rank, world)
        n_local = sum(x.shape[0] for x, _ in local)
        n_total = (
            int(all_reduce(torch.tensor([float(n_local)], dtype=torch.float64), world).item())
            if world > 1
            else prob.n
        )
        choose = _chooser(kind, prob, local, n_total, method, who, progress if rank == 0 else False)
        # the size check counts the peak of the method that will run: the result, the filler's
        # workspace (cached factors, per-chunk and per-strip buffers) and, if asked, the
        # eigendecomposition; without a budget of the user's the working memory shrinks to fit
        limit, by_user = _limit(dev, max_bytes)
        budget = int(memory_budget) if memory_budget is not None else default_budget(P)
        while True:
            W = int(strip_width) if strip_width is not None else min(P, 1024)
            filler, how = choose(budget, W)
            parts = [
                ("the float64 result", 8 * P * P),
                ("working memory", int(filler.workspace_bytes)),
                ("storing a strip (out=)", 16 * P * W if out is not None else 0),
                ("the eigendecomposition", eigh_bytes(P) if eigh else 0),
            ]
            need = sum(nbytes for _, nbytes in parts)
            if need <= limit or memory_budget is not None or budget <= _MIN_BUDGET:
                break
            budget = max(_MIN_BUDGET, budget // 2)
        if need > limit:
            raise _too_large(who, P, dev, need, limit, parts, by_user, memory_budget is None)
        strips = [(j0, min(P, j0 + W)) for j0 in range(0, P, W)]
        # fresh pages, faulted in up front (hessext/_internal/memory.py); fillers that add into
        # the strips get zeros (the kernel's, no pass of our own)
        H = (empty_large if filler.overwrites else zeros_large)(P, P, torch.float64, dev)
        done: set = set()
        info = {
            "kind": kind,
            **prob.info,
            "n": n_total,
            "strip_width": W,
            "world_size": world,
            "accumulation": "float64",
            "method": how,
        }
        store = None
        if out is not None:
            options = {
                "kind": kind,
                "strip_width": W,
                "dtype": str(dtype),
                "method": method,
                "n": n_total,
                "world": world,
            }
            store = StripStore(
                out,
                P=P,
                strip_width=W,
                kind=kind,
                who=who,
                fingerprint=fingerprint(prob, options),
                info=info,
                writer=rank == 0,
            )
            if world > 1:
                dist.barrier()

        # caches, and the parts computed for all strips at once (the CNN's residual blocks,
        # written into H's upper triangle), before the finished strips are copied over them
        filler.prepare(H)
        if store is not None:
            done = store.load_done(H)
            info["resumed_strips"] = len(done)

        bar = progress_bar(
            total=len(strips),
            initial=len(done),
            desc=f"hessext.{kind}",
            unit="strip",
            progress=progress if rank == 0 else False,
        )
        try:
            for idx, (j0, j1) in enumerate(strips):
                if (j0, j1) in done:
                    continue
                acc = H[:j1, j0:j1]  # in place: no strip buffer
                filler.fill(acc, j0, j1)
                if world > 1:
                    acc.copy_(all_reduce(acc.contiguous(), world))
                regularizer_hessian_add(prob, acc, slice(0, j1), slice(j0, j1))
                check_finite_result(acc, who, f"the {kind} strip of columns {j0}:{j1}", NOT_FINITE_HINT)
                # the diagonal tile is symmetric only up to the order of rounding: symmetrise it
                # before storing, so the stored strip is exactly the final matrix's
                _symmetrize_(acc[j0:j1])
                if store is not None:
                    store.save(j0, j1, acc)
                done.add((j0, j1))
                bar.update(1)
                if _after_strip_hook is not None:
                    _after_strip_hook(idx)
        finally:
            bar.close()
        # the lower tiles are the mirror of the upper ones (in square tiles: a transposed copy of
        # a whole strip at once walks memory with a large stride and is several times slower)
        for j0, j1 in strips:
            for i0 in range(0, j0, 256):
                i1 = min(j0, i0 + 256)
                H[j0:j1, i0:i1] = H[i0:i1, j0:j1].T
        batched = getattr(filler, "batched", None)
        if batched is not None and batched.looping:
            info["method"] += f"; {batched.how}"
        del filler
        trim_heap()  # the filler's temporaries, before what comes next (often an eigendecomposition)
        info["seconds"] = time.perf_counter() - t_start
        info["peak_estimate_bytes"] = need
        return Hessian(H, info)


@grad_mode
def hessian(
    model,
    loss_fn,
    data,
    *,
    params=None,
    regularizer=None,
    dtype=torch.float64,
    memory_budget=None,
    out=None,
    progress=None,
    strip_width=None,
    max_bytes=None,
    distributed=None,
    method="auto",
    eigh=False,
) -> Hessian:
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
    memory_budget: bytes of working memory beyond the result: cached per-example factors, chunks
      of examples, per-strip products (default: an eighth of the result, P² bytes, but at least
      64 MiB: smaller chunks cost time). A guide for the chunk sizes, not a hard cap.
    out: directory; finished strips are written as they complete and a rerun resumes (format in
      hessext/curvature/strips.py).
    max_bytes: cap for the size check (default: the memory available now).
    distributed: None (use torch.distributed when initialised), True or False; each rank sums
      its shard of the mini-batches and strips are all-reduced, every rank gets the matrix.
    eigh: also plan for the eigendecomposition that will follow (H.eigh(), top_eigenpairs,
      pinv, local ensembles): the size check then counts its 16·P² bytes as well.
    method: 'auto' (default: 'structured' where it applies, else 'hvp'), 'structured' (closed-form
      layer-pair blocks as matrix products; an nn.Sequential of Linear layers and elementwise
      modules such as ReLU, tanh, softplus, GELU, Dropout; or GGN factor products + a residual
      from packed tangents for an nn.Sequential of Conv1d/Conv2d (groups=1)/Linear layers,
      ReLU/LeakyReLU/Identity/Dropout, Max/AvgPool1d/2d, global average pools, BatchNorm1d/2d
      and Flatten, e.g. hessext.models.SSHCNN) or 'hvp' (the general path: batched
      reverse-over-reverse Hessian-vector products).
      All give the same matrix (to rounding); info['method'] says which ran.
    Before allocating, the size check estimates the peak of the method that will run (the result,
    its working memory, a strip stored with out=, the eigendecomposition with eigh=True; recorded
    in info['peak_estimate_bytes']); without memory_budget it shrinks the working memory to fit,
    and raises HessianTooLargeError (a MemoryError) with the bytes needed if even that does not.
    """
    return _assemble(
        "hessian",
        model,
        loss_fn,
        data,
        params=params,
        regularizer=regularizer,
        dtype=dtype,
        memory_budget=memory_budget,
        out=out,
        progress=progress,
        strip_width=strip_width,
        max_bytes=max_bytes,
        distributed=distributed,
        method=method,
        eigh=eigh,
    )


@grad_mode
def ggn(
    model,
    loss_fn,
    data,
    *,
    params=None,
    regularizer=None,
    dtype=torch.float64,
    memory_budget=None,
    out=None,
    progress=None,
    strip_width=None,
    max_bytes=None,
    distributed=None,
    loss=None,
    eigh=False,
) -> Hessian:
    """The generalised Gauss-Newton matrix (1/n) Σ_i J_iᵀ Λ_i J_i + ∇²R, dense float64 [P, P],
    with J_i = ∂f(x_i)/∂θ and Λ_i = ∂²ℓ_i/∂f² taken exactly from loss_fn (so cross-entropy gives
    the Fisher, diag(p) − ppᵀ, and MSE its constant Λ; any loss works, including ones with an
    indefinite Λ). ``loss`` ('ce', 'mse' or None) is accepted for clarity and recorded only.
    Same arguments and guarantees as ``hessian``."""
    if loss not in (None, "ce", "mse"):
        raise ValueError(f"ggn: loss must be 'ce', 'mse' or None, got {loss!r}")
    H = _assemble(
        "ggn",
        model,
        loss_fn,
        data,
        params=params,
        regularizer=regularizer,
        dtype=dtype,
        memory_budget=memory_budget,
        out=out,
        progress=progress,
        strip_width=strip_width,
        max_bytes=max_bytes,
        distributed=distributed,
        eigh=eigh,
    )
    if loss is not None:
        H.info["loss_kind"] = loss
    return H


@grad_mode
def hessian_operator(
    model, loss_fn, data, *, params=None, regularizer=None, dtype=torch.float64, block: int = 64
) -> HessianOperator:
    """The matrix-free Hessian of the mean training loss: V [P, M] ↦ H V by batched
    forward-over-reverse products (at ``dtype``; sums over mini-batches in float64), ``block``
    columns at a time. A snapshot: the parameters, buffers and data are copied now, so later
    changes to the model or the data do not affect the operator."""
    check_model(model, "hessian_operator", examples_may_interact=True)
    with preserved(model):
        prob = build_problem(
            model,
            loss_fn,
            data,
            params=params,
            regularizer=regularizer,
            dtype=dtype,
            who="hessian_operator",
            copy_data=True,
            examples_may_interact=True,  # its products run over the mini-batches as given
        )
    theta, n = prob.theta, prob.n

    @grad_mode  # products asked for under torch.no_grad() or inference_mode() later
    def matmat(V: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(V.shape, dtype=torch.float64, device=V.device)
        with preserved(model):
            for c0 in range(0, V.shape[1], block):
                Vc = V[:, c0 : c0 + block].T.to(prob.dtype)
                for x, y in prob.batches:
                    g = lambda th: grad(prob.batch_loss_sum)(th, x, y)
                    cols = vmap(lambda v: jvp(g, (theta,), (v,))[1])(Vc)
                    out[:, c0 : c0 + block].add_(cols.T, alpha=1.0 / n)
            if prob.regularizer is not None:
                theta64 = theta.to(torch.float64)
                if hasattr(prob.regularizer, "hessian_diagonal"):
                    out += prob.regularizer.hessian_diagonal(theta64).unsqueeze(1) * V
                else:
                    out += vmap(lambda v: jvp(grad(prob.regularizer.value), (theta64,), (v,))[1])(V.T).T
        if all_finite(V):  # a finite V gives a finite H V, or the model is at fault
            check_finite_result(out, "hessian_operator", "the product H @ V", NOT_FINITE_HINT)
        return out

    held = (
        theta.numel() * theta.element_size()
        + sum(t.numel() * t.element_size() for b in prob.batches for t in b)
        + sum(t.numel() * t.element_size() for t in prob.others.values())
    )
    info = {"kind": "hessian operator", **prob.info, "held_bytes": held}
    if prob.interacting:
        info["interacting"] = f"{prob.interacting}: the mean loss over the mini-batches as given"
    return HessianOperator(
        matmat,
        prob.num_params,
        device=prob.device,
        info=info,
    )
