"""SmoothHess (Torop et al., NeurIPS 2023): the Hessian of a Gaussian-smoothed network from
gradients alone, by Stein's lemma, plus its baselines and the P-MSE evaluation.

With f_σ = f * N(0, σI) (σ is a VARIANCE, as in the paper's N(0, 0.3I); the original code's
argument named "std" was this variance):

    ∇²f_σ(x) = E_z[ σ^{-1/2} z ∇f(x + √σ z)ᵀ ],     ∇f_σ(x) = E_z[ ∇f(x + √σ z) ]  (SmoothGrad).

The Monte-Carlo estimate uses antithetic pairs (z, -z) by default, which cancels the z ∇f(x)ᵀ
term; directions come from a counter-based generator (Philox), so the estimate is a function of
(seed, point index, sample index) only: the same for any thread count and any batch_size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from hessext import ops
from hessext._internal.guard import preserved
from hessext._internal.progress import progress_bar

__all__ = [
    "smooth_hessian",
    "softplus_hessian",
    "vanilla_hessian",
    "pmse",
    "ball_perturbations",
    "SmoothHessResult",
    "PMSEResult",
]

Output = str | int | Callable[[torch.Tensor], torch.Tensor]

# Batch-means groups of the standard error: tile t of the directions goes to group t % 8.
STDERR_GROUPS = 8
_MAX_TILE_PAIRS = 512


class SmoothHessResult(NamedTuple):
    """hessian: [B, D, D] (or [D, D] for a single point), symmetric, float64; for a sweep over
    S values of sigma a leading axis: [S, B, D, D] (or [S, D, D]), likewise for the others.
    grad: [B, D] SmoothGrad (None unless requested). hessian_stderr / grad_stderr: Monte-Carlo
    standard errors of each entry (batch means over STDERR_GROUPS = 8 groups of directions, so
    7 degrees of freedom: the standard error itself is uncertain by about ±27%, use a Student-t
    quantile (t_7, 0.975 = 2.36) for intervals; NaN when fewer than two groups got samples;
    None when not requested or for exact baselines)."""

    hessian: torch.Tensor
    grad: torch.Tensor | None
    hessian_stderr: torch.Tensor | None
    grad_stderr: torch.Tensor | None
    n_samples: int
    sigma: float | tuple[float, ...] | None


def _tile_pairs(n_pairs: int) -> int:
    """Pairs per accumulation tile: a function of n_pairs only (never of threads or chunks), so
    that results are reproducible; large, since every tile costs one float64 pass over the
    [D, K] accumulator, but small enough that every standard-error group gets a tile."""
    tile = _MAX_TILE_PAIRS
    while tile > 8 and n_pairs < STDERR_GROUPS * tile:
        tile //= 2
    return tile


def _first_linear(model) -> tuple[nn.Linear, nn.Module] | None:
    """(first Linear, the rest) when model is an nn.Sequential that starts with nn.Linear: the
    accumulation then runs on the first layer's output gradients (width K < D for the usual
    MLPs) and the weight is multiplied in once at the end, ∇f = W1ᵀ h."""
    if isinstance(model, nn.Sequential) and len(model) >= 1:
        first = model[0]
        if isinstance(first, nn.Sequential):
            inner = _first_linear(first)
            if inner is None:
                return None
            return inner[0], nn.Sequential(inner[1], *list(model)[1:])
        if type(first) is nn.Linear:
            return first, nn.Sequential(*list(model)[1:])
    return None


def _check_common(x, output):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor, got {type(x).__name__}"
            + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else "")
        )
    if x.dim() == 0 or x.numel() == 0:
        raise ValueError(f"x must be one point [D] or a batch [B, ...], got shape {tuple(x.shape)}")
    if not (callable(output) or isinstance(output, int) or output in ("logit", "prob")):
        raise ValueError(f"output must be 'logit', 'prob', a class index or a callable, got {output!r}")


def _selector(model, x_flat, feat_shape, output):
    """A function (out [n, C] or [n], point index per row [n]) -> scalar per row [n], with the
    class for 'logit'/'prob' predicted at the unperturbed points."""
    if callable(output) and not isinstance(output, int):

        def select(out, rows):
            s = output(out)
            if s.shape != (out.shape[0],):
                raise ValueError(
                    f"output callable must return one scalar per row, [{out.shape[0]}], got {tuple(s.shape)}"
                )
            return s

        return select
    with torch.no_grad():
        out0 = model(x_flat.reshape(-1, *feat_shape))
    if out0.dim() == 1 or (out0.dim() == 2 and out0.shape[1] == 1 and output == "logit"):
        if output != "logit":
            raise ValueError(
                f"output={output!r} needs a model with outputs [n, C]; it returns {tuple(out0.shape)}"
            )
        return lambda out, rows: out.reshape(-1)
    if out0.dim() != 2:
        raise ValueError(f"model must return [n, C] or [n], got {tuple(out0.shape)}")
    if isinstance(output, int):
        if not -out0.shape[1] <= output < out0.shape[1]:
            raise ValueError(f"output class index {output} out of range for {out0.shape[1]} outputs")
        return lambda out, rows: out[:, output]
    cls = out0.argmax(dim=1)
    if output == "logit":
        return lambda out, rows: out.gather(1, cls[rows][:, None])[:, 0]
    return lambda out, rows: torch.softmax(out, dim=1).gather(1, cls[rows][:, None])[:, 0]


def _guard(model):
    return preserved(model) if isinstance(model, nn.Module) else _NoGuard()


class _NoGuard:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def smooth_hessian(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    sigma: float | Sequence[float] | torch.Tensor,
    n_samples: int,
    output: Output = "logit",
    antithetic: bool = True,
    batch_size: int | None = None,
    seed: int = 0,
    return_grad: bool = True,
    return_stderr: bool = True,
    progress: bool | None = None,
) -> SmoothHessResult:
    """SmoothHess: Hessian (and SmoothGrad gradient) of the Gaussian-smoothed scalar output.

    model: an nn.Module (run in eval mode; its parameters, .grad, hooks and mode are left as
        they were, also on error) or a function f(x [n, ...]) -> [n] or [n, C].
    x: one point [D] or a batch [B, ...] (Hessians are over the flattened features, D = prod).
    sigma: the VARIANCE of the Gaussian smoothing, σ > 0 (perturbations are √σ z); or a
        sweep, a sequence [S] of variances: one call estimates every σ from the same
        directions z (common random numbers: the curves over σ are smooth, and for a
        2-homogeneous f, whose ∇f(√σ z) = √σ ∇f(z), identical), with the S copies of each
        chunk evaluated in one forward/backward; results get a leading axis [S, ...].
    n_samples: gradient evaluations per point; even with antithetic pairs (z and -z).
    output: 'logit' (of the class predicted at x), 'prob' (its softmax probability), a class
        index, or a callable out [n, C] -> [n].
    batch_size: model rows per forward/backward (memory bound); rounded to whole tiles of
        directions. With the compiled core, results do not depend on it, nor on the thread
        count (bit for bit); the pure-torch fallback agrees with them to rounding.
    seed: Philox key; same seed, same arguments -> bit-identical estimate.

    return_stderr: entrywise standard errors of Ĥ and of the gradient (batch means). Their cost
        does not grow with n_samples: for a model starting with Linear(D, K), 7·2·D²·K flops
        per point, i.e. the accumulation work of about 7·D pairs (on 784-500-...: 4.3 GFLOP;
        measured 0.05-0.1 s per point on one loaded core, 2-3k bare gradient evaluations'
        worth: ~15-30% of a 10^4-sample run, ~2-3% of a 10^5-sample one). Pass False to skip.

    Returns SmoothHessResult(hessian [B, D, D], grad [B, D], hessian_stderr, grad_stderr, ...),
    float64, symmetrised once at the end: Ĥ = sym( σ^{-1/2}/N Σ_j z_j ∇f(x + √σ z_j)ᵀ ).

    When the model is an nn.Sequential starting with nn.Linear(D, K) (x a batch of vectors), the
    estimator runs on the first layer's output: W(x ± √σz) + b = (Wx + b) ± √σ Wz costs one
    [P, D] x [D, K] GEMM per pair instead of one per sample, the network is differentiated
    w.r.t. the layer's output h only (no input-gradient GEMM), Σ z hᵀ is accumulated in
    [D, K] and multiplied by W once at the end (∇f = Wᵀh). The same estimate, less work than
    the bare input-gradient evaluations themselves.
    """
    _check_common(x, output)
    if not callable(model):
        raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
    sweep = not isinstance(sigma, (int, float)) or isinstance(sigma, bool)
    if sweep and isinstance(sigma, torch.Tensor) and sigma.dim() == 0:
        sweep, sigma = False, float(sigma)
    sigmas = _check_sigmas(sigma if sweep else [sigma])
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"smooth_hessian: n_samples must be a positive int, got {n_samples!r}")
    if antithetic and n_samples % 2:
        raise ValueError(f"smooth_hessian: n_samples must be even with antithetic pairs, got {n_samples}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"smooth_hessian: batch_size must be a positive int, got {batch_size!r}")
    single = x.dim() == 1
    xb = (x[None] if single else x).detach()
    B, feat_shape = xb.shape[0], tuple(xb.shape[1:])
    D = math.prod(feat_shape)
    x_flat = xb.reshape(B, D).contiguous()
    A = 2 if antithetic else 1
    n_pairs = n_samples // A
    tile = _tile_pairs(n_pairs)
    M = STDERR_GROUPS if return_stderr else 1

    with _guard(model):
        select = _selector(model, x_flat, feat_shape, output)
        split = _first_linear(model) if len(feat_shape) == 1 else None
        if split is not None and split[0].in_features != D:
            split = None
        K = split[0].out_features if split is not None else D
        W = split[0].weight.detach() if split is not None else None
        S = len(sigmas)
        # the S copies of a chunk (one per σ) share the row budget
        rows = max(1, (batch_size or 4096) // S)
        # pairs per chunk (whole tiles, so chunking never changes a tile); several points per
        # chunk only when all of a point's pairs fit in one, so the float64 group accumulators
        # [S, b, M, D, K] exist for one block of points at a time
        pairs = tile * max(1, rows // (A * tile))
        pairs = min(pairs, tile * math.ceil(n_pairs / tile))
        pts = max(1, min(B, rows // (A * pairs))) if pairs >= n_pairs else 1
        hess = torch.empty(S, B, D, D, dtype=torch.float64, device=x.device)
        grad = torch.empty(S, B, D, dtype=torch.float64, device=x.device) if return_grad else None
        hess_se = torch.empty_like(hess) if return_stderr else None
        grad_se = (
            torch.empty(S, B, D, dtype=torch.float64, device=x.device)
            if return_stderr and return_grad
            else None
        )
        blocks = [(p0, min(B, p0 + pts)) for p0 in range(0, B, pts)]
        bar = progress_bar(
            total=len(blocks) * math.ceil(n_pairs / pairs),
            desc="smooth_hessian",
            unit="chunk",
            progress=progress,
        )
        try:
            for p0, p1 in blocks:
                hess_acc = torch.zeros(S, p1 - p0, M, D, K, dtype=torch.float64, device=x.device)
                grad_acc = torch.zeros(S, p1 - p0, M, K, dtype=torch.float64, device=x.device)
                for j0 in range(0, n_pairs, pairs):
                    np_ = min(pairs, n_pairs - j0)
                    h, z = _chunk_gradients(
                        model, split, select, x_flat[p0:p1], feat_shape, sigmas, seed, p0, j0, np_, antithetic
                    )
                    for s in range(S):
                        ops.stein_accumulate(h[s], hess_acc[s], grad_acc[s], seed, p0, j0, tile, z)
                    bar.update(1)
                for s in range(S):
                    g, g_se = _finish(
                        hess_acc[s],
                        grad_acc[s],
                        n_pairs,
                        tile,
                        A,
                        sigmas[s],
                        W,
                        hess[s, p0:p1],
                        hess_se[s, p0:p1] if hess_se is not None else None,
                        return_grad,
                    )
                    for dst, val in ((grad, g), (grad_se, g_se)):
                        if dst is not None:
                            dst[s, p0:p1] = val
                del hess_acc, grad_acc
        finally:
            bar.close()
    if return_stderr and _groups_used(n_pairs, tile) < 2:
        warnings.warn(
            f"smooth_hessian: {n_pairs} pairs fill fewer than two standard-error "
            f"groups; the standard errors are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    if not sweep:
        hess, grad = hess[0], (grad[0] if grad is not None else None)
        hess_se = hess_se[0] if hess_se is not None else None
        grad_se = grad_se[0] if grad_se is not None else None
    if single:
        hess, grad = hess[..., 0, :, :], (grad[..., 0, :] if grad is not None else None)
        hess_se = hess_se[..., 0, :, :] if hess_se is not None else None
        grad_se = grad_se[..., 0, :] if grad_se is not None else None
    return SmoothHessResult(hess, grad, hess_se, grad_se, n_samples, tuple(sigmas) if sweep else sigmas[0])


def _check_sigmas(values) -> list[float]:
    """The variances of a call as a list of floats, each finite and > 0."""
    try:
        sigmas = [
            float(v) for v in (values.reshape(-1).tolist() if isinstance(values, torch.Tensor) else values)
        ]
    except (TypeError, ValueError):
        raise ValueError(
            f"smooth_hessian: sigma must be a variance > 0 or a sequence of them, got {values!r}"
        ) from None
    if not sigmas:
        raise ValueError("smooth_hessian: sigma is an empty sequence")
    for v in sigmas:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"smooth_hessian: sigma (a variance) must be finite and > 0, got {v}")
    return sigmas


def _chunk_gradients(model, split, select, xc, feat_shape, sigmas, seed, p0, j0, n_pairs, antithetic):
    """Gradients h [S, b, A, P, K] of the selected outputs at the chunk's perturbed copies, one
    set per variance in sigmas [S] (all from the same directions), from one backward of their
    sum, w.r.t. the inputs only (parameters are never differentiated), and the directions
    z [b, P, D] when they were formed anyway (else None: regenerated)."""
    b, D = xc.shape
    S = len(sigmas)
    A = 2 if antithetic else 1
    point_rows = torch.arange(p0, p0 + b, device=xc.device).repeat_interleave(A * n_pairs).repeat(S)
    if split is None:
        z = None
        if S == 1:
            xp = ops.stein_perturb(xc, sigmas[0], seed, p0, j0, n_pairs, antithetic)[None]
        else:
            # 0 + 1·z is z exactly; x ± √σ z per σ, as stein_perturb forms it
            z = ops.stein_perturb(torch.zeros_like(xc), 1.0, seed, p0, j0, n_pairs, False)[:, 0]
            copies = []
            for sigma in sigmas:
                step = torch.tensor(math.sqrt(sigma), dtype=xc.dtype, device=xc.device) * z
                plus = xc[:, None, :] + step
                copies.append(
                    torch.stack([plus, xc[:, None, :] + (-step)], 1) if antithetic else plus[:, None]
                )
            xp = torch.stack(copies)
        inp = xp.reshape(-1, *feat_shape).requires_grad_(True)
        with torch.enable_grad():
            s = select(model(inp), point_rows)
            (g,) = torch.autograd.grad(s.sum(), inp)
        return g.reshape(S, b, A, n_pairs, D), z
    first, rest = split
    # The first layer is linear: W(x ± √σz) + c = (Wx + c) ± W(√σz), one GEMM per pair instead
    # of one per sample (and one for all σ of a sweep); the accumulation then needs
    # h = ∂f/∂(first layer output) only.
    with torch.no_grad():
        # 0 + 1·z is z exactly: the accumulation reads these instead of regenerating them
        z = ops.stein_perturb(torch.zeros_like(xc), 1.0, seed, p0, j0, n_pairs, False)[:, 0]
        Wz = z.reshape(-1, D) @ first.weight.T
        c = nn.functional.linear(xc, first.weight, first.bias)[:, None, None, :]
        copies = []
        for sigma in sigmas:
            Y = (Wz * math.sqrt(sigma)).reshape(b, 1, n_pairs, -1)
            copies.append(torch.cat([c + Y, c - Y], dim=1) if antithetic else c + Y)
        a = torch.stack(copies)
    a = a.requires_grad_(True)
    with torch.enable_grad():
        s = select(rest(a.reshape(S * b * A * n_pairs, -1)), point_rows)
        (h,) = torch.autograd.grad(s.sum(), a)
    return h, z


def _group_sizes(n_pairs, tile, M):
    """Pairs per standard-error group: tile t of the directions went to group t % M."""
    counts = [0] * M
    for t in range(math.ceil(n_pairs / tile)):
        counts[t % M] += min(tile, n_pairs - t * tile)
    return counts


def _groups_used(n_pairs, tile):
    return sum(c > 0 for c in _group_sizes(n_pairs, tile, STDERR_GROUPS))


def _contrasts(n_g):
    """[G, G-1] orthonormal columns orthogonal to √n_g."""
    u = (n_g / n_g.sum()).sqrt()[:, None]
    Q, _ = torch.linalg.qr(torch.cat([u, torch.eye(len(n_g), dtype=u.dtype, device=u.device)], 1))
    return Q[:, 1 : len(n_g)]


def _finish(hess_acc, grad_acc, n_pairs, tile, A, sigma, W, hess_out, hess_se_out, return_grad):
    """Hessian, gradient and their standard errors of a block of points from the float64 group
    sums hess_acc [b, M, D, K] and grad_acc [b, M, K] (K-space when W [K, D] is given): the
    Hessian into hess_out [b, D, D], its standard error into hess_se_out (None: not asked for);
    returns (gradient, its standard error), None where not asked for. Results go straight into
    the caller's tensors: fresh float64 [D, D] buffers are a large part of a small call's cost.

    The standard error is the batch-means one: the M groups of tiles are independent estimates,
    so Var(Ĥ_ij) ≈ Σ_g n_g (Ĥ_g,ij - Ĥ_ij)² / ((G - 1) n) with G used groups of n_g pairs. The
    G - 1 contrasts of the group sums are formed in K-space (float64, one [G-1, G] x [G, D·K]
    product per point: cheap), then pass through W one at a time at W's precision (a statistic
    with G - 1 = 7 degrees of freedom, ~27% relative sampling error: the rounding is
    irrelevant), each symmetrised and squared into one [D, D] sum, so that only [D, D]
    temporaries are ever alive (fresh memory is a large part of a small call's cost). The
    cost, (G-1)·2D²K flops, does not grow with n: the same as the accumulation GEMMs of 7D
    pairs, i.e. 7D/n of them (5,500 pairs on a 784-input model).
    An entrywise standard error of Ĥ = sym(S W) cannot be had cheaper from K-space sums: the
    entries mix the K columns of S, so any per-entry variance needs a D x D product per degree
    of freedom; per-pair squares would need the D-space gradients the shortcut avoids."""
    b, M = hess_acc.shape[:2]
    scale = 1.0 / (math.sqrt(sigma) * A)  # per pair: σ^{-1/2} z (h+ - h-)ᵀ / 2
    S = hess_acc.sum(dim=1).div_(n_pairs)  # mean over pairs, [b, D, K]
    SW = S @ W.double() if W is not None else S
    torch.add(SW, SW.transpose(-1, -2), out=hess_out).mul_(0.5 * scale)  # sym(S W) · scale
    Gm = grad_acc.sum(dim=1) / n_pairs
    grad = (Gm @ W.double() if W is not None else Gm) / A if return_grad else None
    grad_se = None
    if hess_se_out is not None:
        counts = _group_sizes(n_pairs, tile, M)
        used = [g for g in range(M) if counts[g] > 0]
        if len(used) < 2:
            hess_se_out.fill_(float("nan"))
            grad_se = torch.full_like(grad, float("nan")) if grad is not None else None
            return grad, grad_se
        n_g = torch.tensor([counts[g] for g in used], dtype=torch.float64, device=S.device)
        denom = (len(used) - 1) * n_pairs
        # Σ_g n_g (mean_g - mean)² = Σ_r c_r² with the G - 1 Helmert-type contrasts
        # c_r = Σ_g Q[g, r] S_g / √n_g, Q an orthonormal basis of the complement of √n: one
        # GEMM block fewer than the G deviations, and no mean to subtract.
        Q = _contrasts(n_g)  # [G, G - 1]
        # all groups used (the usual case): a slice, not an indexed copy of the accumulators
        groups = slice(None) if len(used) == M else used
        coef = (Q / n_g.sqrt()[:, None]).T.contiguous()  # [G - 1, G]
        work_dtype = W.dtype if W is not None else hess_acc.dtype
        for p in range(b):  # a point, then a contrast, at a time: [D, D] temporaries only
            S_g = hess_acc[p, groups]  # [G, D, K] float64
            C = (coef @ S_g.reshape(S_g.shape[0], -1)).to(work_dtype)  # the G - 1 contrasts
            C = C.view(-1, *S_g.shape[1:])
            E = T = var = None
            for r in range(C.shape[0]):
                E = torch.mm(C[r], W, out=E) if W is not None else C[r]
                T = torch.add(E, E.T, out=T)  # 2 sym(c_r W)
                var = T.square() if var is None else var.addcmul_(T, T)
            hess_se_out[p].copy_(var).mul_(0.25 * scale * scale / denom).sqrt_()
        if grad is not None:
            # point by point, like the Hessian's: a batched product over the block's points
            # rounds differently with the block size on some BLAS builds (seen on AMD Zen),
            # and the estimate must not depend on batch_size
            grad_se = torch.empty_like(grad)
            for p in range(b):
                dev_g = coef @ grad_acc[p, groups]  # [G - 1, K]
                if W is not None:
                    dev_g = dev_g @ W.double()
                grad_se[p] = (dev_g.pow(2).sum(0) / denom).sqrt() / A
    return grad, grad_se


# ---- baselines -------------------------------------------------------------------------------


class _SoftplusInsteadOfReLU(torch.overrides.TorchFunctionMode):
    """Inside this mode every relu (nn.ReLU, F.relu, torch.relu, in place or not) computes
    softplus_β instead: the user's model object is never edited."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta
        self._relus = {
            torch.relu,
            torch.relu_,
            nn.functional.relu,
            nn.functional.relu_,
            torch.Tensor.relu,
            torch.Tensor.relu_,
        }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._relus:
            return nn.functional.softplus(args[0], beta=self.beta)
        return func(*args, **kwargs)


def vanilla_hessian(
    model, x: torch.Tensor, *, output: Output = "logit", _beta: float | None = None
) -> SmoothHessResult:
    """Exact input Hessian and gradient of the selected output (torch.func, per point). For a
    ReLU network the Hessian is zero almost everywhere: the baseline SmoothHess improves on.
    x: [D] or [B, ...]; returns SmoothHessResult with hessian [B, D, D], grad [B, D], float64
    results in x's dtype promoted to float64, no standard errors."""
    _check_common(x, output)
    single = x.dim() == 1
    xb = (x[None] if single else x).detach()
    B, feat_shape = xb.shape[0], tuple(xb.shape[1:])
    D = math.prod(feat_shape)
    x_flat = xb.reshape(B, D)
    hs, gs = [], []
    with _guard(model):
        select = _selector(model, x_flat, feat_shape, output)
        for b in range(B):
            rows = torch.tensor([b], device=x.device)

            def f(v):
                return select(model(v.reshape(1, *feat_shape)), rows)[0]

            mode = _SoftplusInsteadOfReLU(_beta) if _beta is not None else None
            if mode is not None:
                mode.__enter__()
            try:
                gs.append(torch.func.grad(f)(x_flat[b]))
                hs.append(torch.func.hessian(f)(x_flat[b]))
            finally:
                if mode is not None:
                    mode.__exit__(None, None, None)
    # detached: the values depend on the parameters, but the results are numbers, not graphs
    hess = torch.stack(hs).detach().double()
    grad = torch.stack(gs).detach().double()
    if single:
        hess, grad = hess[0], grad[0]
    return SmoothHessResult(hess, grad, None, None, 1, None)


def softplus_hessian(model, x: torch.Tensor, *, beta: float, output: Output = "logit") -> SmoothHessResult:
    """The SoftPlus baseline: the exact input Hessian (and gradient) of the network with every
    ReLU replaced by softplus_β(t) = log(1 + e^{βt})/β, through a torch function mode (the
    model is not edited). The class for 'logit'/'prob' is the one the ReLU network predicts.
    x: [D] or [B, ...]; returns SmoothHessResult(hessian [B, D, D], grad [B, D], None, None)."""
    beta = float(beta)
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"softplus_hessian: beta must be finite and > 0, got {beta}")
    return vanilla_hessian(model, x, output=output, _beta=beta)


# ---- P-MSE -------------------------------------------------------------------------------------


class PMSEResult(NamedTuple):
    """Perturbation mean-squared errors of the Taylor models, mean over samples then points
    (first_order, second_order: scalars, or [M] for M stacked models), per point ([B] or
    [M, B]), and second_better: the fraction of points where the second-order model's error is
    below the first-order one's (scalar or [M])."""

    first_order: torch.Tensor
    second_order: torch.Tensor
    first_order_per_point: torch.Tensor
    second_order_per_point: torch.Tensor
    second_better: torch.Tensor


def ball_perturbations(
    point: int, start: int, count: int, D: int, *, radius: float, sampling: str, seed: int, device=None
) -> torch.Tensor:
    """Perturbations δ_j = ρ_j u_j, j = start .. start + count - 1, of point index ``point``:
    [count, D] float64. u_j uniform on the unit sphere (a normalised Philox normal vector),
    ρ_j = radius·U_j ('radius-uniform', the original's) or radius·U_j^{1/D} ('volume-uniform'),
    U_j = Φ(an extra normal coordinate), uniform on (0, 1). Counter-based, like the SmoothHess
    sampler: δ_j depends on (seed, point, j) only, never on how the samples are chunked."""
    zeros = torch.zeros(1, D + 1, dtype=torch.float64, device=device)
    z = ops.stein_perturb(zeros, 1.0, seed, point, start, count, False)[0, 0]
    u = z[:, :D] / z[:, :D].norm(dim=1, keepdim=True)
    U = 0.5 * torch.erfc(-z[:, D:] / math.sqrt(2.0))
    rho = radius * (U if sampling == "radius-uniform" else U ** (1.0 / D))
    return rho * u


def pmse(
    model,
    x: torch.Tensor,
    grad: torch.Tensor,
    hess: torch.Tensor | None,
    *,
    radius: float,
    n_samples: int,
    sampling: str = "radius-uniform",
    seed: int = 0,
    output: Output = "logit",
    batch_size: int = 4096,
    progress: bool | None = None,
) -> PMSEResult:
    """P-MSE of f(x) + δᵀg (first order) and f(x) + δᵀg + ½δᵀHδ (second order) against
    f(x + δ), δ = ρu with u uniform on the unit sphere and ρ ~ U[0, radius] ('radius-uniform',
    the original's) or ρ = radius·U^{1/D} ('volume-uniform', uniform in the ball); see
    :func:`ball_perturbations`. The Taylor models are anchored at the unsmoothed f(x), as in the
    original.

    x: [D] or [B, D]; grad: [B, D], or [M, B, D] for M Taylor models judged on the same
    perturbations (the network is evaluated once for all of them); hess: [B, D, D] or
    [M, B, D, D] matching, or None (first order only: second_order equals first_order). The
    output class for 'logit' / 'prob' is the one predicted at x, as in smooth_hessian.
    Memory: one chunk of batch_size perturbations of one point at a time, whatever n_samples."""
    _check_common(x, output)
    if sampling not in ("radius-uniform", "volume-uniform"):
        raise ValueError(f"pmse: sampling must be 'radius-uniform' or 'volume-uniform', got {sampling!r}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"pmse: radius must be finite and > 0, got {radius}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"pmse: n_samples must be a positive int, got {n_samples!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"pmse: batch_size must be a positive int, got {batch_size!r}")
    xb = (x[None] if x.dim() == 1 else x).detach()
    B, feat_shape = xb.shape[0], tuple(xb.shape[1:])
    D = math.prod(feat_shape)
    x_flat = xb.reshape(B, D)
    stacked = grad.dim() == 3
    g = (grad if stacked else grad.reshape(1, -1, D)).to(torch.float64)
    if g.shape[1:] != (B, D):
        raise ValueError(f"pmse: grad must be [{B}, {D}] or [M, {B}, {D}], got {tuple(grad.shape)}")
    M = g.shape[0]
    H = None
    if hess is not None:
        H = hess.to(torch.float64)
        if not stacked:
            H = (H[None] if H.dim() == 2 else H)[None]
        if H.shape != (M, B, D, D):
            want = f"[{M}, {B}, {D}, {D}]" if stacked else f"[{B}, {D}, {D}]"
            raise ValueError(f"pmse: hess must be {want}, got {tuple(hess.shape)}")
    e1 = torch.zeros(M, B, dtype=torch.float64)
    e2 = torch.zeros(M, B, dtype=torch.float64)
    bar = progress_bar(total=B, desc="pmse", unit="point", progress=progress)
    try:
        with _guard(model), torch.no_grad():
            select = _selector(model, x_flat, feat_shape, output)
            f0 = select(model(xb), torch.arange(B, device=x.device)).double()
            for b in range(B):
                rows = torch.tensor([b], device=x.device)
                gb = g[:, b].to(x.device)
                Hb = H[:, b].to(x.device) if H is not None else None
                for j0 in range(0, n_samples, batch_size):
                    n = min(batch_size, n_samples - j0)
                    delta = ball_perturbations(
                        b, j0, n, D, radius=radius, sampling=sampling, seed=seed, device=x.device
                    )
                    inp = (x_flat[b] + delta.to(x.dtype)).reshape(n, *feat_shape)
                    target = select(model(inp), rows.expand(n)).double() - f0[b]
                    first = delta @ gb.T  # [n, M]
                    r1 = target[:, None] - first
                    e1[:, b] += r1.square().sum(0).cpu()
                    if Hb is not None:
                        quad = torch.einsum("nd,mde,ne->nm", delta, Hb, delta)
                        e2[:, b] += (r1 - 0.5 * quad).square().sum(0).cpu()
                bar.update(1)
    finally:
        bar.close()
    e1 /= n_samples
    e2 = e2 / n_samples if H is not None else e1.clone()
    better = (e2 < e1).double().mean(1)
    first_mean, second_mean = e1.mean(1), e2.mean(1)
    if not stacked:
        return PMSEResult(first_mean[0], second_mean[0], e1[0], e2[0], better[0])
    return PMSEResult(first_mean, second_mean, e1, e2, better)
