"""``hessext analyze``: the Hessian toolbox on a user's model and data, as a report folder."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hessext.apps import analysis as tb
from hessext.reporting import figures as F
from hessext.reporting.report import Report, StageTimer, UserError, check_target

DATA_FORMAT = """\
data file: a .pt file (torch.save of a dict, read with torch.load(weights_only=True)) or a .npz
file (numpy.savez) holding
  x_train  [n, ...]  training inputs (float)
  y_train  [n]       integer class labels of the training inputs
  x_test   [m, ...]  inputs to analyse
  y_test   [m]       (optional) their labels; without them influence uses the model's predictions
The model maps x [N, ...] to logits [N, C] and is scored with mean cross-entropy."""


class _ScriptAdapter(nn.Module):
    """A TorchScript model made differentiable in its parameters.

    Every method here swaps parameters with torch.func.functional_call, which TorchScript
    modules refuse. torch's TorchScript → export converter (torch._export.converter, private)
    gives an fx graph of the same computation whose weights are buffers; they are turned back
    into parameters (same names as in the TorchScript model, prefixed 'graph.') and the
    converter's input-shape guard (it would pin the batch size of the example) is dropped."""

    def __init__(self, scripted, example):
        super().__init__()
        from torch._export.converter import TS2EPConverter

        graph = TS2EPConverter(scripted, (example,)).convert().module()
        names = {n for n, _ in scripted.named_parameters()}
        for full, b in list(graph.named_buffers()):
            if full in names:
                owner_name, _, leaf = full.rpartition(".")
                owner = graph.get_submodule(owner_name) if owner_name else graph
                del owner._buffers[leaf]
                owner.register_parameter(leaf, nn.Parameter(b.detach().clone()))
        graph._modules.pop("_guards_fn", None)
        object.__setattr__(graph, "_guards_fn", lambda *a, **k: None)
        self.graph = graph

    def train(self, mode: bool = True):
        # exported graphs refuse train()/eval(); the TorchScript model's mode is baked in
        self.training = mode
        return self

    def forward(self, x):
        return self.graph(x)


def _load_data(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                raw = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is the file's problem
        raise UserError(f"cannot read data file {path}: {type(e).__name__}: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(
            f"data file {path} must hold a dict with x_train, y_train, x_test "
            f"[, y_test], got {type(raw).__name__}"
        )
    missing = [k for k in ("x_train", "y_train", "x_test") if k not in raw]
    if missing:
        raise UserError(f"data file {path} lacks {', '.join(missing)} (has {', '.join(sorted(raw))})")
    data = {}
    for k in ("x_train", "y_train", "x_test", "y_test"):
        if k in raw:
            t = torch.as_tensor(raw[k])
            data[k] = t.long() if k.startswith("y") else t.float()
            if k.startswith("x") and not bool(torch.isfinite(data[k]).all()):
                rows = int((~torch.isfinite(data[k])).reshape(len(data[k]), -1).any(1).sum())
                raise UserError(
                    f"{k} in {path} contains non-finite values (nan or inf) in {rows} of {len(data[k])} rows"
                )
    for xs, ys in (("x_train", "y_train"), ("x_test", "y_test")):
        if ys in data:
            if data[ys].dim() != 1:
                raise UserError(f"{ys} must be 1-D class labels [n], got shape {tuple(data[ys].shape)}")
            if len(data[xs]) != len(data[ys]):
                raise UserError(f"{xs} has {len(data[xs])} rows but {ys} has {len(data[ys])}")
    if len(data["x_train"]) < 2 or len(data["x_test"]) < 1:
        raise UserError("need at least 2 training and 1 test inputs")
    return data


def _load_model(path: Path, arch: str | None):
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    if arch is None:
        try:
            return torch.jit.load(str(path), map_location="cpu"), "TorchScript"
        except Exception as e:  # noqa: BLE001
            raise UserError(
                f"cannot load {path} as a TorchScript model ({type(e).__name__}); "
                "for a state-dict checkpoint pass --arch module:Class"
            ) from None
    if ":" not in arch:
        raise UserError(
            f"--arch must look like module:Class (e.g. hessext.models:Conv1DToolbox), got {arch!r}"
        )
    mod_name, cls_name = arch.split(":", 1)
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot import --arch {arch}: {e}") from None
    try:
        model = cls()
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot build {arch}() without arguments: {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"cannot load state dict {path} into {arch}: {type(e).__name__}: {first}") from None
    return model, f"state dict + {arch}"


def _adapt_script(model, data):
    example = data["x_train"][:2]
    try:
        adapted = _ScriptAdapter(model, example)
        with torch.no_grad():
            same = torch.allclose(adapted(example), model(example), rtol=1e-5, atol=1e-6)
    except Exception as e:  # noqa: BLE001
        raise UserError(
            "cannot make the TorchScript model differentiable in its parameters "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); save "
            "its state dict and pass --arch module:Class instead"
        ) from None
    if not same:
        raise UserError(
            "the TorchScript model's converted graph disagrees with it on x_train[:2]; "
            "save its state dict and pass --arch module:Class instead"
        )
    return adapted


def _check_outputs(model, data):
    x = data["x_train"][:2]
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001
        raise UserError(
            f"the model fails on x_train[:2] of shape {tuple(x.shape)}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x):
        raise UserError(
            f"the model must return logits [N, C] for N inputs; for N = {len(x)} it "
            f"returned {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
        )
    C = out.shape[1]
    for k in ("y_train", "y_test"):
        if k in data:
            y = data[k]
            if int(y.min()) < 0 or int(y.max()) >= C:
                raise UserError(
                    f"{k} holds classes {int(y.min())}..{int(y.max())} but the model has C = {C} outputs"
                )
    return C


def run_analyze(
    model_path,
    data_path,
    *,
    arch: str | None = None,
    out="hessext-analysis",
    seed: int = 0,
    n_bootstrap: int = 50,
    progress: bool | None = None,
    quiet: bool = False,
):
    """The toolbox on a user's model and data file, as a report folder ``out``: exact Hessian
    spectrum, influence and RelatIF, RUE and the extrapolation score. Returns (path, timer)."""
    check_target(out)  # refuse a folder we may not write before any work
    model, kind = _load_model(Path(model_path), arch)
    data = _load_data(Path(data_path))
    model.eval()
    C = _check_outputs(model, data)
    if kind == "TorchScript":
        model = _adapt_script(model, data)
    P = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if P == 0:
        raise UserError("the model has no trainable parameters")
    if P > 20000:
        raise UserError(
            f"the model has P = {P:,} parameters; the dense exact Hessian is limited to "
            "20,000 here (use the Python API's hessian_operator for larger models)"
        )
    x_tr, y_tr, x_te = data["x_train"], data["y_train"], data["x_test"]
    with torch.no_grad():
        pred_te = model(x_te).argmax(1)
    y_te = data.get("y_test", pred_te)
    timer = StageTimer(4, quiet=quiet)
    with Report(out, f"hessext analyze: {Path(model_path).name} on {Path(data_path).name}") as rep:
        with timer.stage("exact Hessian (float64)"):
            H = tb.exact_hessian(model, x_tr, y_tr, progress=progress)
            lam, _ = H.eigh()
            st = tb.choose_settings(lam)
        with timer.stage("influence"):
            wrong = torch.nonzero(pred_te != y_te).flatten()
            picks = (wrong if len(wrong) else torch.arange(len(x_te)))[:3]
            inf, rel = tb.influence_scores(
                model, (x_tr, y_tr), (x_te[picks], y_te[picks]), H, st["damping_influence"], progress=progress
            )
        with timer.stage("RUE and extrapolation score"):
            sets = {"train": (x_tr, y_tr), "test": (x_te, y_te)}
            rue_v, score_v, n_removed, _ = tb.rue_and_score(
                model, (x_tr, y_tr), sets, H, st, seed=seed, n_bootstrap=n_bootstrap, progress=progress
            )
            au = tb.auroc(score_v["train"], score_v["test"])
        with timer.stage("figures and report"):
            with torch.no_grad():
                acc_tr = float((model(x_tr).argmax(1) == y_tr).float().mean())
            rep.table(
                ["item", "value"],
                [
                    ["model", f"{model_path} ({kind}), P = {P:,}, C = {C} classes"],
                    [
                        "data",
                        f"{data_path}: {len(x_tr)} training inputs {tuple(x_tr.shape[1:])}, "
                        f"{len(x_te)} test inputs",
                    ],
                    [
                        "test labels",
                        "given (y_test)" if "y_test" in data else "none: the model's predictions are used",
                    ],
                    ["training accuracy", f"{acc_tr:.3f}"],
                    ["seed", seed],
                ],
            )
            rep.heading("Hessian spectrum")
            rep.figure(
                F.spectrum(
                    lam,
                    damping=st["damping_influence"],
                    threshold=st["score_threshold"],
                    title=f"Exact Hessian of the training loss (P = {P:,})",
                ),
                "spectrum",
                "All eigenvalues of the Hessian of the mean cross-entropy over the training set "
                "(model in eval mode), largest first, symmetric-log axis. Red: negative.",
            )
            rep.table(["quantity", "value"], tb.settings_table(st, H, n_removed))
            rep.heading("Influence")
            which = "misclassified" if len(wrong) else "first"
            rep.figure(
                F.influence_bars(
                    [
                        (f"test #{int(i)} (label {int(y_te[i])}, pred {int(pred_te[i])})", inf[:, k])
                        for k, i in enumerate(picks)
                    ],
                    title=f"Most helpful / harmful training examples ({which} test inputs)",
                ),
                "influence",
                "Influence IF = (1/n) g_testᵀ (H + δI)⁻¹ g_train of each training example on the "
                "test loss: positive (green) = removing it would raise the loss (it helped), "
                f"negative (red) = it harmed. δ = {st['damping_influence']:g}.",
            )
            rows = []
            for k, i in enumerate(picks):
                order = inf[:, k].argsort(descending=True)
                rows.append(
                    [
                        f"test #{int(i)}",
                        ", ".join(str(int(j)) for j in order[:5]),
                        ", ".join(str(int(j)) for j in order.flip(0)[:5]),
                        ", ".join(str(int(j)) for j in rel[:, k].argsort(descending=True)[:5]),
                    ]
                )
            rep.table(
                ["test input", "most helpful (IF)", "most harmful (IF)", "most helpful (RelatIF)"], rows
            )
            rep.heading("Uncertainty and extrapolation")
            rep.figure(
                F.per_set_distribution(
                    rue_v,
                    xlabel="data set",
                    ylabel="RUE: variance of class probabilities\nover bootstrap models",
                    title="RUE uncertainty",
                ),
                "rue",
                f"RUE with {n_bootstrap} bootstrap models, damping δ = {st['damping_rue']:g}.",
            )
            rep.figure(
                F.ood_histogram(
                    score_v["train"],
                    score_v["test"],
                    auroc=au,
                    clean_label="training inputs",
                    shifted_label="test inputs",
                    xlabel="extrapolation score ‖U⊥ᵀ g(x)‖",
                    title="Local-ensemble extrapolation score",
                ),
                "score",
                f"Extrapolation score with {n_removed} top eigen-directions removed "
                f"(λ > t = {st['score_threshold']:.3g}). AUROC = {au:.3f} for telling test from "
                "training inputs by the score (0.5: indistinguishable).",
            )
            rep.heading("Timings (seconds)")
            rep.table(["stage", "seconds"], timer.table())
            path = rep.finish()
    return path, timer
