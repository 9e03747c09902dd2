"""Interpretation of convolutional classifiers: CAM, grad-CAM, recorded activations and PCA.

- ``cam``: class activation map (Zhou et al. 2016) for a head "global average pool → Linear":
  M_c(s) = Σ_k W[c, k] A_k(s), with A [N, K, *S] the activations of the chosen layer and W the
  Linear head's weight. Its spatial mean plus the bias is exactly the logit f_c.
- ``grad_cam``: grad-CAM (Selvaraju et al. 2017) for ANY layer whose output is [N, K, L]
  (1-D) or [N, K, H, W] (2-D): α_k = mean_s ∂f_c/∂A_k(s), M_c(s) = ReLU(Σ_k α_k A_k(s)).
- ``record_activations`` and ``ActivationPCA``: activations of named layers, and PCA fitted on
  one set (e.g. clean data) and applied to others (e.g. disordered data).

The user's model is theirs: every function runs it in eval mode (dropout off, BatchNorm on its
running statistics) inside ``preserved(model)`` and removes its own hooks in ``finally``, so the
parameters, .grad, hooks and train/eval mode are exactly as before, also after an error. The
forward pass runs on detached copies of the parameters (``torch.func.functional_call``) and the
only tensor that requires grad is the hooked activation, so nothing is accumulated in .grad and
the backward pass stops at the layer. Maps are computed at ``dtype`` (default: the parameters'
dtype, so float64 for a float64 model; pass torch.float64 for full precision on a float32
model), never in reduced precision.

``layer`` arguments: a submodule of the model, or its name in ``model.named_modules()``
(e.g. ``"block3"`` or ``"net.3"``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from hessext._internal.contract import check_inputs
from hessext._internal.guard import check_model, preserved
from hessext._internal.params import functional_state
from hessext._internal.progress import progress_bar

__all__ = ["cam", "grad_cam", "record_activations", "ActivationPCA"]


# ---------------------------------------------------------------------------------------------
# helpers


def _resolve_layer(fn: str, model: nn.Module, layer) -> tuple[str, nn.Module]:
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer not in modules:
            some = [n for n in modules if n][:12]
            raise ValueError(
                f"{fn}: {layer!r} is not a submodule of the model; its submodules include {some}"
            )
        return layer, modules[layer]
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return name, m
        raise ValueError(f"{fn}: layer {type(layer).__name__} is not a submodule of the model")
    raise TypeError(f"{fn}: layer must be a submodule or its name, got {type(layer).__name__}")


def _check_model_x(fn: str, model, x):
    check_model(model, fn)
    check_inputs(x, fn, model=model, name="x", min_dim=2)


def _model_dtype(model, dtype):
    if dtype is not None:
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        return dtype
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _forward_capturing(fn, model, x, name, module, dtype, *, leaf: bool):
    """Run the model on x at ``dtype`` with a hook on ``module``; returns (logits, A).

    leaf=True replaces the layer's output by a detached copy that requires grad, so that
    autograd.grad(·, A) is the gradient w.r.t. the activation and the graph stops there.
    The hook is removed in ``finally``; ``preserved`` (around the caller) also restores the
    hook dicts should anything else go wrong."""
    captured = []

    def hook(mod, args, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"{fn}: layer {name!r} returned {type(output).__name__}, expected a "
                f"tensor of activations [N, K, ...]"
            )
        if leaf:
            output = output.detach().requires_grad_(True)
        captured.append(output)
        return output

    handle = module.register_forward_hook(hook)
    try:
        out = torch.func.functional_call(model, functional_state(model, dtype), (x.detach().to(dtype),))
    finally:
        handle.remove()
    if len(captured) != 1:
        raise ValueError(
            f"{fn}: layer {name!r} ran {len(captured)} times in one forward pass; "
            f"it must run exactly once (a layer reused in the model is ambiguous)"
        )
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(
            f"{fn}: the model must return logits [N, C]; for inputs {tuple(x.shape)} "
            f"it returned {getattr(out, 'shape', type(out).__name__)}"
        )
    return out, captured[0]


def _targets(fn, target, logits) -> torch.Tensor:
    n, C = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    t = torch.as_tensor(target, device=logits.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,) or t.is_floating_point() or t.is_complex():
        raise ValueError(
            f"{fn}: target must be None (the predicted class), an int or integer "
            f"labels [N={n}], got {tuple(t.shape)} {t.dtype}"
        )
    t = t.long()
    if bool(((t < 0) | (t >= C)).any()):
        raise ValueError(
            f"{fn}: target classes must be in [0, {C}), got values {sorted(set(t.tolist()))[:8]}"
        )
    return t


def _check_conv_activation(fn, name, A):
    if A.dim() not in (3, 4):
        raise ValueError(
            f"{fn}: layer {name!r} must output [N, K, L] (1-D) or [N, K, H, W] (2-D) "
            f"activations, got shape {tuple(A.shape)}"
        )


def _upsample(maps: torch.Tensor, x: torch.Tensor, upsample) -> torch.Tensor:
    """maps [N, *S] → [N, *size] by (bi)linear interpolation (align_corners=False)."""
    if upsample is None or upsample is False:
        return maps
    spatial = maps.dim() - 1
    if upsample is True:
        size = tuple(x.shape[-spatial:])
        if x.dim() != spatial + 2:
            raise ValueError(
                f"upsample=True needs inputs [N, C, *S] with {spatial} spatial axes "
                f"like the map, got inputs {tuple(x.shape)}; pass upsample=<size>"
            )
    else:
        size = (upsample,) if isinstance(upsample, int) else tuple(upsample)
        if len(size) != spatial:
            raise ValueError(f"upsample: size {size} must have {spatial} entries like the map")
    mode = "linear" if spatial == 1 else "bilinear"
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


# ---------------------------------------------------------------------------------------------
# CAM and grad-CAM


def _find_head(fn, model, K):
    heads = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.in_features == K]
    if not heads:
        raise ValueError(
            f"{fn}: found no nn.Linear with in_features = {K} (the layer's channels) "
            f"to serve as the head after global average pooling; pass head="
        )
    return heads[-1]


def cam(
    model: nn.Module,
    x: torch.Tensor,
    layer,
    *,
    target=None,
    head=None,
    upsample=False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Class activation map M_c(s) = Σ_k W[c, k] A_k(s) for a model whose head is global average
    pooling of ``layer``'s output followed by a Linear layer (as ``hessext.models.SSHCNN``).

    x: [N, C_in, *S_in]; layer: the last conv block (module or name), output A [N, K, *S]
    (1-D or 2-D); head: the nn.Linear (module or name) mapping the K pooled channels to the
    logits (default: the last nn.Linear with in_features = K); target: None (each input's
    predicted class), an int, or [N] classes. Returns [N, *S] (raw, not normalised, no ReLU; with
    upsample=True interpolated to the input's spatial size S_in, or pass a size). The spatial
    mean of M_c plus the head's bias b_c equals the logit f_c when the head sees exactly the
    pooled activations."""
    fn = "cam"
    _check_model_x(fn, model, x)
    name, module = _resolve_layer(fn, model, layer)
    dtype = _model_dtype(model, dtype)
    with preserved(model), torch.no_grad():
        logits, A = _forward_capturing(fn, model, x, name, module, dtype, leaf=False)
        _check_conv_activation(fn, name, A)
        K = A.shape[1]
        if head is None:
            head_name, head_module = _find_head(fn, model, K)
        else:
            head_name, head_module = _resolve_layer(fn, model, head)
        if not isinstance(head_module, nn.Linear) or head_module.in_features != K:
            raise ValueError(
                f"{fn}: head {head_name!r} must be an nn.Linear with in_features = "
                f"{K} (the channels of {name!r}), got {head_module}"
            )
        if head_module.out_features != logits.shape[1]:
            raise ValueError(
                f"{fn}: head {head_name!r} has {head_module.out_features} outputs but "
                f"the model returns {logits.shape[1]} logits"
            )
        t = _targets(fn, target, logits)
        W = head_module.weight.detach().to(dtype)[t]  # [N, K]
        maps = torch.einsum("nk,nk...->n...", W, A)
    return _upsample(maps, x, upsample)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    layer,
    *,
    target=None,
    upsample=False,
    relu: bool = True,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """grad-CAM: α_k = mean_s ∂f_c/∂A_k(s), M_c(s) = ReLU(Σ_k α_k A_k(s)), for ANY layer whose
    output A is [N, K, L] or [N, K, H, W] (a conv block, whatever follows it).

    x: [N, C_in, *S_in]; layer: module or name; target: None (each input's predicted class), an
    int, or [N] classes; relu=False returns the signed map. Returns [N, *S] (with upsample=True
    interpolated to the input's spatial size, or pass a size). Gradients come from one forward
    and one backward pass for the whole batch: in eval mode the examples do not interact, so the
    gradient of Σ_n f_{c_n}(x_n) w.r.t. A_n is ∂f_{c_n}(x_n)/∂A_n."""
    fn = "grad_cam"
    _check_model_x(fn, model, x)
    name, module = _resolve_layer(fn, model, layer)
    dtype = _model_dtype(model, dtype)
    with preserved(model), torch.enable_grad():
        logits, A = _forward_capturing(fn, model, x, name, module, dtype, leaf=True)
        _check_conv_activation(fn, name, A)
        t = _targets(fn, target, logits)
        score = logits.gather(1, t.unsqueeze(1)).sum()
        if not score.requires_grad:
            raise ValueError(f"{fn}: the logits do not depend on layer {name!r}")
        (dA,) = torch.autograd.grad(score, A, allow_unused=True)
        if dA is None:
            raise ValueError(f"{fn}: the logits do not depend on layer {name!r}")
        spatial = tuple(range(2, A.dim()))
        alpha = dA.mean(dim=spatial, keepdim=True)  # [N, K, 1, ...]
        maps = (alpha * A).sum(dim=1).detach()
    if relu:
        maps = maps.clamp_min(0)
    return _upsample(maps, x, upsample)


# ---------------------------------------------------------------------------------------------
# activations and PCA


def record_activations(
    model: nn.Module,
    x: torch.Tensor,
    layers,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    progress: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Outputs of the given layers for inputs x [N, ...]: {name: [N, ...]} (detached, at
    ``dtype``, default the parameters'). layers: a name or module, or a list of them; keys are
    the names in ``model.named_modules()``. batch_size: run the inputs in chunks (progress bar
    when there is more than one). The model runs in eval mode and is left untouched."""
    fn = "record_activations"
    _check_model_x(fn, model, x)
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    resolved = [_resolve_layer(fn, model, layer) for layer in layers]
    if not resolved:
        raise ValueError(f"{fn}: layers is empty")
    names = [n for n, _ in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"{fn}: layers listed twice: {names}")
    n = x.shape[0]
    if batch_size is None:
        batch_size = n
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be a positive int, got {batch_size!r}")
    dtype = _model_dtype(model, dtype)
    state = functional_state(model, dtype)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    current: dict[str, list[torch.Tensor]] = {}

    def make_hook(name):
        def hook(mod, args, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"{fn}: layer {name!r} returned {type(output).__name__}, expected a tensor")
            current.setdefault(name, []).append(output.detach())

        return hook

    starts = range(0, n, batch_size)
    with preserved(model), torch.no_grad():
        handles = [m.register_forward_hook(make_hook(name)) for name, m in resolved]
        try:
            for s in progress_bar(
                starts, total=len(starts), desc="activations", progress=progress if len(starts) > 1 else False
            ):
                current.clear()
                torch.func.functional_call(model, state, (x[s : s + batch_size].detach().to(dtype),))
                for name in names:
                    got = current.get(name, [])
                    if len(got) != 1:
                        raise ValueError(
                            f"{fn}: layer {name!r} ran {len(got)} times in one "
                            f"forward pass; it must run exactly once"
                        )
                    chunks[name].append(got[0])
        finally:
            for h in handles:
                h.remove()
    return {name: torch.cat(parts) for name, parts in chunks.items()}


class ActivationPCA:
    """PCA fitted on one set of activations and applied to others.

    ``fit(X)`` with X [N, ...] (flattened to [N, F]): mean μ [F]; the centred data's thin SVD
    (torch.linalg.svd, float64) gives components [k, F] (rows, unit length, sign fixed so that
    each component's entry of largest magnitude is positive), singular values,
    explained_variance = s²/(N−1) and explained_variance_ratio = s²/Σ s² (over ALL components,
    so the ratios of the kept ones sum to ≤ 1). ``transform(Y)`` = (Y − μ) componentsᵀ → [M, k]
    for any other set with the same feature shape; ``inverse_transform(Z)`` maps back.
    n_components: None (all, min(N, F)) or an int."""

    def __init__(self, n_components: int | None = None):
        if n_components is not None and (
            not isinstance(n_components, int) or isinstance(n_components, bool) or n_components < 1
        ):
            raise ValueError(
                f"ActivationPCA: n_components must be None or a positive int, got {n_components!r}"
            )
        self.n_components = n_components
        self.mean_: torch.Tensor | None = None
        self.components_: torch.Tensor | None = None
        self.singular_values_: torch.Tensor | None = None
        self.explained_variance_: torch.Tensor | None = None
        self.explained_variance_ratio_: torch.Tensor | None = None
        self.feature_shape: torch.Size | None = None
        self.n_samples: int | None = None

    def _flat(self, who, X):
        if not isinstance(X, torch.Tensor):
            raise TypeError(f"ActivationPCA.{who}: expected a torch.Tensor [N, ...], got {type(X).__name__}")
        if X.dim() < 1 or X.shape[0] == 0 or not X.is_floating_point():
            raise ValueError(
                f"ActivationPCA.{who}: expected a non-empty floating tensor [N, ...], "
                f"got {tuple(X.shape)} {X.dtype}"
            )
        X = X.detach().to(torch.float64)
        return X.reshape(X.shape[0], -1) if X.dim() > 1 else X.unsqueeze(1)

    def fit(self, X: torch.Tensor) -> ActivationPCA:
        F_ = self._flat("fit", X)
        n, f = F_.shape
        if n < 2:
            raise ValueError(f"ActivationPCA.fit: need at least 2 samples, got {n}")
        k_all = min(n, f)
        k = k_all if self.n_components is None else self.n_components
        if k > k_all:
            raise ValueError(f"ActivationPCA.fit: n_components = {k} exceeds min(N={n}, F={f})")
        self.mean_ = F_.mean(dim=0)
        _, S, Vh = torch.linalg.svd(F_ - self.mean_, full_matrices=False)
        # a deterministic sign: each component's largest-magnitude entry is positive
        pivot = Vh.gather(1, Vh.abs().argmax(dim=1, keepdim=True))
        Vh = Vh * torch.where(pivot < 0, -1.0, 1.0).to(Vh)
        var = S.square()
        total = var.sum()
        self.components_ = Vh[:k]
        self.singular_values_ = S[:k]
        self.explained_variance_ = var[:k] / (n - 1)
        self.explained_variance_ratio_ = var[:k] / total if total > 0 else torch.zeros_like(var[:k])
        self.feature_shape = X.shape[1:]
        self.n_samples = n
        return self

    def _fitted(self, who) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        """(mean, components, feature shape) of a fitted PCA; RuntimeError before fit()."""
        if self.mean_ is None or self.components_ is None or self.feature_shape is None:
            raise RuntimeError(f"ActivationPCA.{who}: call fit() first")
        return self.mean_, self.components_, self.feature_shape

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """[M, *feature_shape] → [M, k] float64 scores."""
        mean, components, shape = self._fitted("transform")
        if X.shape[1:] != shape:
            raise ValueError(
                f"ActivationPCA.transform: features of shape {tuple(X.shape[1:])} do "
                f"not match the fitted {tuple(shape)}"
            )
        return (self._flat("transform", X) - mean) @ components.T

    def fit_transform(self, X: torch.Tensor) -> torch.Tensor:
        return self.fit(X).transform(X)

    def inverse_transform(self, Z: torch.Tensor) -> torch.Tensor:
        """[M, k] scores → [M, *feature_shape] float64 (the projection onto the kept components)."""
        mean, components, shape = self._fitted("inverse_transform")
        k = components.shape[0]
        if not isinstance(Z, torch.Tensor) or Z.dim() != 2 or Z.shape[1] != k:
            raise ValueError(
                f"ActivationPCA.inverse_transform: expected scores [M, {k}], got "
                f"{getattr(Z, 'shape', type(Z).__name__)}"
            )
        out = Z.to(torch.float64) @ components + mean
        return out.reshape(Z.shape[0], *shape)

    def __repr__(self):
        if self.components_ is None:
            return f"ActivationPCA(n_components={self.n_components}, not fitted)"
        ratio = self.explained_variance_ratio_[:3].tolist()
        return (
            f"ActivationPCA(k={self.components_.shape[0]}, features={math.prod(self.feature_shape)}, "
            f"n={self.n_samples}, explained_variance_ratio[:3]={[round(r, 4) for r in ratio]})"
        )
