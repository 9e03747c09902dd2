"""How wrong is a curvature approximation? ``compare_curvature`` measures it on a model small
enough for the exact Hessian (docs/structured-curvature.md):

* per layer block b and in total: the relative Frobenius error ‖C_bb − H_bb‖_F / ‖H_bb‖_F and
  the relative operator-norm error ‖C_bb − H_bb‖₂ / ‖H_bb‖₂ against the exact Hessian and the
  exact GGN (the total includes the off-diagonal blocks a block-diagonal approximation drops);
* influence: the Spearman rank correlation of its influence scores with those of the exact
  Hessian and of the exact GGN, at the same damping;
* optionally (``loo`` > 0) actual leave-one-out retraining: a copy of the model is first
  converged on the training objective (full-batch L-BFGS), every comparison is then made at
  those parameters, and for the ``loo`` training examples of largest exact influence the copy is
  retrained without each (warm-started L-BFGS); the Pearson correlation of the predicted and the
  actual change of every test loss is reported for the exact curvature and each approximation.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from hessext._internal.contract import split_pair
from hessext._internal.guard import preserved
from hessext._internal.params import flat_parameters
from hessext.attribution.influence import influence
from hessext.curvature.assembly import ggn as exact_ggn
from hessext.curvature.assembly import hessian as exact_hessian
from hessext.curvature.diagonal import diag_ggn, hutchinson_diagonal
from hessext.curvature.kfac import ekfac, kfac
from hessext.curvature.lanczos import lanczos
from hessext.curvature.structured import StructuredCurvature
from hessext.per_sample.example_grads import checked_loss

__all__ = ["compare_curvature", "CurvatureComparison", "APPROXIMATIONS"]

# approximations compare_curvature builds by name
APPROXIMATIONS = {
    "kfac": lambda m, l, d, **kw: kfac(m, l, d, **kw),
    "ekfac": lambda m, l, d, **kw: ekfac(m, l, d, **kw),
    "kfac-ggn": lambda m, l, d, **kw: kfac(m, l, d, fisher="exact-ggn", **kw),
    "ekfac-ggn": lambda m, l, d, **kw: ekfac(m, l, d, fisher="exact-ggn", **kw),
    "diag_ggn": lambda m, l, d, **kw: diag_ggn(m, l, d, **kw),
    "hutchinson": lambda m, l, d, **kw: hutchinson_diagonal(m, l, d, **kw),
}
# dense eigenvalue problems up to this size; Lanczos above
_DENSE_NORM = 3000


@dataclass
class CurvatureComparison:
    """What ``compare_curvature`` measured. errors: {(approximation, reference, block):
    (relative Frobenius, relative operator norm)} with block 'total' for the whole matrix;
    influence: {approximation: {'spearman_hessian', 'spearman_ggn', 'loo_pearson', 'seconds',
    'memory_bytes'}} (the exact references included as 'hessian' and 'ggn')."""

    blocks: list[str]
    errors: dict = field(default_factory=dict)
    influence: dict = field(default_factory=dict)
    damping: float = 0.0
    n: int = 0
    num_params: int = 0
    info: dict = field(default_factory=dict)

    def table(self) -> str:
        """The error table (markdown): one row per approximation and reference."""
        head = "| approximation | vs | " + " | ".join(f"{b} (F / 2)" for b in self.blocks + ["total"]) + " |"
        lines = [head, "|" + "---|" * (len(self.blocks) + 3)]
        for name, ref in dict.fromkeys((a, r) for a, r, _ in self.errors):
            cells = []
            for b in self.blocks + ["total"]:
                fro, op = self.errors[(name, ref, b)]
                cells.append(f"{fro:.3f} / {op:.3f}")
            lines.append(f"| {name} | {ref} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "| approximation | influence Spearman vs Hessian | vs GGN | LOO Pearson | memory (MiB) "
            "| build (s) |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in self.influence.items():
            lines.append(
                f"| {name} | {_fmt(row.get('spearman_hessian'))} | {_fmt(row.get('spearman_ggn'))} | "
                f"{_fmt(row.get('loo_pearson'))} | {row.get('memory_bytes', 0) / 2**20:.3f} | "
                f"{row.get('seconds', float('nan')):.2f} |"
            )
        return "\n".join(lines)


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.reshape(-1).argsort().argsort().double()
    rb = b.reshape(-1).argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()).clamp_min(1e-300))


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def _norm2(D: torch.Tensor) -> float:
    """‖D‖₂ of a symmetric matrix: exact up to _DENSE_NORM, Lanczos above."""
    if D.shape[0] <= _DENSE_NORM:
        return float(torch.linalg.eigvalsh(D).abs().max()) if D.numel() else 0.0
    return _norm2_op(lambda V: D @ V, D.shape[0])


def _layer_blocks(model, params) -> dict[str, torch.Tensor]:
    """{module name: positions in θ} of the chosen parameters, grouped by owning module."""
    names, tensors = flat_parameters(model, params)
    out: dict[str, list] = {}
    start = 0
    for name, t in zip(names, tensors):
        module = name.rsplit(".", 1)[0] if "." in name else name
        out.setdefault(module, []).append(torch.arange(start, start + t.numel()))
        start += t.numel()
    return {k: torch.cat(v) for k, v in out.items()}


def _norm2_op(matmat, P: int) -> float:
    """‖M‖₂ of a symmetric operator: its extreme eigenvalues by Lanczos."""
    top = lanczos(matmat, P, 1, which="largest", tol=1e-6)[0]
    low = lanczos(matmat, P, 1, which="smallest", tol=1e-6)[0]
    return max(abs(float(top[0])), abs(float(low[0])))


def _relative_errors(C, H: torch.Tensor, blocks: dict, h_norms: dict) -> dict:
    """{block: (relative Frobenius, relative operator-norm error)} of the approximation C (any
    curvature object; its dense layer blocks only, never the whole P×P matrix unless it has
    entries between layers) against the dense exact H, and 'total' over the whole matrix."""
    out = {}
    structured = isinstance(C, StructuredCurvature) and all(
        any(bool(torch.isin(b.index, idx).all()) for idx in blocks.values()) for b in C.blocks
    )
    full = None if structured else C.dense()
    off_sq = float(H.square().sum())
    diff_sq = 0.0
    for name, idx in blocks.items():
        Hb = H[idx][:, idx]
        if full is not None:
            Cb = full[idx][:, idx]
        else:
            Cb = torch.zeros_like(Hb)
            pos = {int(p): k for k, p in enumerate(idx.tolist())}
            for b in C.blocks:
                if bool(torch.isin(b.index, idx).all()):
                    local = torch.tensor([pos[int(p)] for p in b.index.tolist()])
                    Cb[local.unsqueeze(1), local.unsqueeze(0)] = b.dense()
        block_diff = float((Cb - Hb).square().sum())
        diff_sq += block_diff
        off_sq -= float(Hb.square().sum())
        out[name] = (
            math.sqrt(block_diff) / max(h_norms[name][0], 1e-300),
            _norm2(Cb - Hb) / max(h_norms[name][1], 1e-300),
        )
    if full is not None:
        fro = float((full - H).norm())
        op = _norm2(full - H)
    else:  # C is zero between the layer blocks: those entries' error is H's own
        fro = math.sqrt(diff_sq + max(off_sq, 0.0))
        P = H.shape[0]
        op = _norm2(C.dense() - H) if P <= _DENSE_NORM else _norm2_op(lambda V: C @ V - H @ V, P)
    out["total"] = (fro / max(h_norms["total"][0], 1e-300), op / max(h_norms["total"][1], 1e-300))
    return out


def _reference_norms(H: torch.Tensor, blocks: dict) -> dict:
    """{block: (‖H_bb‖_F, ‖H_bb‖₂)} and 'total'."""
    out = {name: (float(H[idx][:, idx].norm()), _norm2(H[idx][:, idx])) for name, idx in blocks.items()}
    out["total"] = (float(H.norm()), _norm2(H))
    return out


def _converge(model, loss, x, y, regularizer, weights, theta0, names, others, steps):
    """argmin_θ Σ w_i ℓ_i / Σ w + R(θ) by full-batch L-BFGS from θ0 (strong Wolfe), float64."""
    theta = theta0.clone().requires_grad_(True)
    shapes = [others["__shapes__"][k] for k in names]

    def objective():
        params, i = {}, 0
        for k, s in zip(names, shapes):
            params[k] = theta[i : i + s.numel()].view(s)
            i += s.numel()
        rest = {k: v for k, v in others.items() if k != "__shapes__"}
        per = loss(functional_call(model, {**rest, **params}, (x,)), y)
        value = (weights * per).sum() / weights.sum()
        if regularizer is not None:
            value = value + regularizer.value(theta)
        return value

    opt = torch.optim.LBFGS(
        [theta],
        lr=1,
        max_iter=steps,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        value = objective()
        value.backward()
        return value

    opt.step(closure)
    grad_norm = float(theta.grad.norm()) if theta.grad is not None else float("nan")
    return theta.detach(), grad_norm


def compare_curvature(
    model: nn.Module,
    loss_fn,
    train,
    approximations=("kfac", "ekfac", "diag_ggn"),
    *,
    test=None,
    damping: float = 0.1,
    params=None,
    regularizer=None,
    loo: int = 0,
    loo_steps: int = 500,
    progress: bool | None = None,
) -> CurvatureComparison:
    """Errors of curvature approximations against the exact Hessian and GGN (module docstring).

    approximations: names from APPROXIMATIONS ('kfac', 'ekfac', 'kfac-ggn', 'ekfac-ggn',
    'diag_ggn', 'hutchinson') and/or (name, curvature object) pairs built at this model's
    parameters. test: (inputs, targets) for the influence comparison (None: errors only).
    damping: δ > 0 of every influence solve. loo: leave-one-out retrainings (0: none).
    Returns a CurvatureComparison (``.table()`` for markdown;
    hessext.reporting.figures.curvature_comparison for a figure)."""
    caller = "compare_curvature"
    if not (isinstance(damping, (int, float)) and not isinstance(damping, bool) and damping > 0):
        raise ValueError(
            f"{caller}: damping must be a number > 0 (every influence solve uses it), got {damping!r}"
        )
    if not (isinstance(loo, int) and loo >= 0):
        raise ValueError(f"{caller}: loo must be an integer >= 0, got {loo!r}")
    items = []
    for a in approximations:
        if isinstance(a, str):
            if a not in APPROXIMATIONS:
                raise ValueError(f"{caller}: approximations: unknown {a!r}; known: {sorted(APPROXIMATIONS)}")
            items.append((a, None))
        elif isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str):
            items.append(a)
        else:
            raise TypeError(f"{caller}: approximations must be names or (name, curvature) pairs, got {a!r}")
    if loo and test is None:
        raise ValueError(f"{caller}: loo > 0 needs test=(inputs, targets)")
    x, y = split_pair(train, f"{caller}: train", need_targets=True)
    work = model
    info: dict = {}
    if loo:
        # every comparison at a converged copy: LOO retraining predicts from a minimum
        work = copy.deepcopy(model).double().eval()
        if any(obj is not None for _, obj in items):
            raise ValueError(f"{caller}: loo > 0 converges a copy of the model; pass approximations by name")
    if loo:
        x, y = x.double() if x.is_floating_point() else x, y.double() if y.is_floating_point() else y
    others: dict = {}
    theta = None
    if loo:
        with preserved(work):
            loss = checked_loss(work, loss_fn, x, y, caller)
            names, tensors = flat_parameters(work, params)
            others = {k: v.detach() for k, v in work.named_parameters() if k not in names}
            others.update(dict(work.named_buffers()))
            others["__shapes__"] = {k: t.shape for k, t in zip(names, tensors)}
            theta0 = torch.cat([t.detach().reshape(-1) for t in tensors])
            ones = torch.ones(x.shape[0], dtype=torch.float64)
            theta, gnorm = _converge(work, loss, x, y, regularizer, ones, theta0, names, others, loo_steps)
        with torch.no_grad():  # the converged parameters go into our own copy only
            i = 0
            for t in tensors:
                t.copy_(theta[i : i + t.numel()].view_as(t))
                i += t.numel()
        info["converged_gradient_norm"] = gnorm
    with preserved(work):
        loss = checked_loss(work, loss_fn, x, y, caller)
        names, tensors = flat_parameters(work, params)
        blocks = _layer_blocks(work, params)
        H = exact_hessian(work, loss_fn, (x, y), params=params, regularizer=regularizer, progress=progress)
        G = exact_ggn(work, loss_fn, (x, y), params=params, regularizer=regularizer, progress=progress)
        result = CurvatureComparison(
            list(blocks), damping=float(damping), n=x.shape[0], num_params=H.num_params
        )
        built = []
        for name, obj in items:
            t0 = time.perf_counter()
            if obj is None:
                obj = APPROXIMATIONS[name](
                    work, loss_fn, (x, y), params=params, regularizer=regularizer, progress=False
                )
            built.append((name, obj, time.perf_counter() - t0))
        norms = {"hessian": _reference_norms(H.dense(), blocks), "ggn": _reference_norms(G.dense(), blocks)}
        for name, obj, seconds in built:
            for ref, exact in (("hessian", H), ("ggn", G)):
                for b, errs in _relative_errors(obj, exact.dense(), blocks, norms[ref]).items():
                    result.errors[(name, ref, b)] = errs
            result.influence[name] = {"seconds": seconds, "memory_bytes": obj.memory_bytes}
        if test is not None:
            scores: dict[str, torch.Tensor | None] = {}
            for name, C in [("hessian", H), ("ggn", G)] + [(n_, o) for n_, o, _ in built]:
                try:
                    scores[name] = influence(
                        work,
                        loss_fn,
                        (x, y),
                        test,
                        hessian=C,
                        damping=damping,
                        params=params,
                        regularizer=regularizer,
                        progress=False,
                    )
                except ValueError as err:  # e.g. H + δI not positive definite
                    scores[name] = None
                    info.setdefault("influence_errors", {})[name] = str(err)
            for name in scores:
                row = result.influence.setdefault(name, {"memory_bytes": 8 * H.num_params**2})
                for ref in ("hessian", "ggn"):
                    s_ref, s = scores.get(ref), scores[name]
                    row[f"spearman_{ref}"] = (
                        _spearman(s, s_ref) if s is not None and s_ref is not None else float("nan")
                    )
            if loo:
                _leave_one_out(
                    work, loss, x, y, test, regularizer, names, others, theta, scores, loo, loo_steps, result
                )
    result.info = {**info, "params": names, "damping": float(damping), "loo": loo}
    return result


def _leave_one_out(work, loss, x, y, test, regularizer, names, others, theta, scores, k, steps, result):
    """Retrain without each of the k most influential examples (by the exact Hessian's scores,
    else the GGN's) and correlate predicted with actual test-loss changes."""
    xt, yt = split_pair(test, "compare_curvature: test", need_targets=True)
    xt = xt.double() if xt.is_floating_point() else xt
    ref = scores.get("hessian") if scores.get("hessian") is not None else scores["ggn"]
    chosen = ref.abs().sum(1).topk(min(k, ref.shape[0])).indices.tolist()
    shapes = others["__shapes__"]
    rest = {key: v for key, v in others.items() if key != "__shapes__"}

    def test_losses(th):
        params, i = {}, 0
        for key in names:
            s = shapes[key]
            params[key] = th[i : i + s.numel()].view(s)
            i += s.numel()
        with torch.no_grad():
            return loss(functional_call(work, {**rest, **params}, (xt,)), yt)

    base = test_losses(theta)
    actual = []
    for i in chosen:
        w = torch.ones(x.shape[0], dtype=torch.float64)
        w[i] = 0
        th_i, _ = _converge(work, loss, x, y, regularizer, w, theta, names, others, steps)
        actual.append(test_losses(th_i) - base)
    actual_t = torch.stack(actual)  # [k, m]
    for name, s in scores.items():
        if s is not None:
            result.influence[name]["loo_pearson"] = _pearson(s[chosen], actual_t)
