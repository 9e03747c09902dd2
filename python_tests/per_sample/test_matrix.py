"""The lazy PerSampleGrads operator against the materialised matrix (and torch.func), the
routing of parameters to kernels or torch.func, fallback parity with HESSEXT_DISABLE_EXT=1,
every bad input, and the caller's model left untouched after success and after errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import hessext
from hessext.regularizers import L2
from hessext.testing import (
    assert_same_state,
    model_state,
    per_sample_cases,
    relative_error,
    run_python,
    torch_func_per_sample_grads,
)

CE = nn.CrossEntropyLoss(reduction="none")
CASES = {c[0]: c for c in per_sample_cases()}


def make(name, n=7, dtype=torch.float64, seed=0):
    _, factory, inputs, targets = CASES[name]
    torch.manual_seed(seed)
    return factory().to(dtype), inputs(n, dtype), targets(n)


# ---- lazy products ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "sequence_mlp", "cnn2d", "mixed_cnn", "tied_mlp"])
@pytest.mark.parametrize("chunk_size", [None, 3])
@pytest.mark.parametrize("reg", [None, 0.25])
def test_lazy_products_match_materialised(name, chunk_size, reg):
    model, x, y = make(name)
    regularizer = L2(reg) if reg else None
    G = hessext.PerSampleGrads(model, CE, x, y, chunk_size=chunk_size, regularizer=regularizer)
    dense = torch_func_per_sample_grads(model, CE, x, y)
    if reg:
        dense = dense + reg * torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    N, P = dense.shape
    assert G.shape == (N, P) and G.T.shape == (P, N)
    torch.manual_seed(1)
    V, U = torch.randn(P, 4, dtype=torch.float64), torch.randn(N, 3, dtype=torch.float64)
    assert relative_error(G.materialize(), dense) <= 1e-10
    assert relative_error(G @ V, dense @ V) <= 1e-10
    assert relative_error(G @ V[:, 0], dense @ V[:, 0]) <= 1e-10
    assert (G @ V[:, 0]).shape == (N,)
    assert relative_error(G.T @ U, dense.T @ U) <= 1e-10
    assert relative_error(G.rmatmul(U[:, 0]), dense.T @ U[:, 0]) <= 1e-10
    assert relative_error(G.row_norms(), dense.norm(dim=1)) <= 1e-10
    assert relative_error(G.gram(), dense @ dense.T) <= 1e-10


def test_lazy_float32_and_shapes_errors():
    model, x, y = make("mlp", dtype=torch.float32)
    G = hessext.PerSampleGrads(model, CE, x, y)
    dense = G.materialize()
    V = torch.randn(G.shape[1], 2)
    # products regroup the same float32 sums: bounded by K·u with K = P (the longest sum)
    bound = G.shape[1] * 2.0**-24
    assert relative_error(G @ V, dense.double() @ V.double()) <= bound
    with pytest.raises(ValueError, match=r"PerSampleGrads.__matmul__: expected shape \["):
        G @ torch.randn(G.shape[1] + 1, 2)
    with pytest.raises(ValueError, match="PerSampleGrads.rmatmul"):
        G.T @ torch.randn(3)
    with pytest.raises(TypeError, match="PerSampleGrads.__matmul__"):
        G @ [1.0]
    assert set(G.unflatten(dense[0])) == set(G.param_names)


def test_routing_kernels_and_fallback():
    model, x, y = make("mixed_cnn")
    G = hessext.PerSampleGrads(model, CE, x, y)
    assert G.kernel_param_names == ["0.weight", "0.bias", "5.weight", "5.bias", "8.weight", "8.bias"]
    assert G.fallback_param_names == ["1.weight", "1.bias", "4.weight", "4.bias"]
    model, x, y = make("tied_mlp")
    G = hessext.PerSampleGrads(model, CE, x, y)
    # the shared weight (a.weight is b.weight) and the layer called twice go through torch.func
    assert G.fallback_param_names == ["a.weight", "twice.weight", "twice.bias"]
    assert "head.weight" in G.kernel_param_names and "b.bias" in G.kernel_param_names


# ---- fallback parity ---------------------------------------------------------------------------

PARITY_SCRIPT = r"""
import json, sys, torch
import hessext
from hessext import testing as cases
from torch import nn
CE = nn.CrossEntropyLoss(reduction="none")
out = {{"loaded": hessext._extension.loaded}}
for name, factory, inputs, targets in cases.per_sample_cases():
    torch.manual_seed(0)
    model = factory().double()
    x, y = inputs(4, torch.float64), targets(4)
    G = hessext.PerSampleGrads(model, CE, x, y, chunk_size=3)
    V = torch.linspace(-1, 1, G.shape[1] * 2, dtype=torch.float64).reshape(-1, 2)
    out[name] = [hessext.per_sample_grads(model, CE, x, y).tolist(), (G @ V).tolist(),
                 G.gram().tolist(), G.row_norms().tolist()]
print(json.dumps(out))
"""


def run_parity(disable: bool):
    script = PARITY_SCRIPT.format()
    return json.loads(run_python(script, disable_ext=disable).strip().splitlines()[-1])


def test_fallback_parity():
    with_ext, without = run_parity(False), run_parity(True)
    assert without["loaded"] is False
    if not with_ext["loaded"]:
        pytest.skip("compiled core not built: both runs used the reference")
    for name in CASES:
        for got, want in zip(with_ext[name], without[name]):
            assert relative_error(torch.tensor(got), torch.tensor(want)) <= 1e-10, name


# ---- bad inputs, and the model left untouched ----------------------------------------------------


def prepared_model():
    """mixed_cnn in TRAIN mode, with .grad set on some parameters and a user hook."""
    model, x, y = make("mixed_cnn", n=4)
    model.train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[5].register_forward_hook(lambda m, a, o: None)
    model[8].bias.requires_grad_(False)
    return model, x, y


def bad_calls(x, y):
    return [
        ("targets has batch size 3 but inputs has 4", lambda m: (m, CE, x, y[:3]), {}),
        ("inputs is an empty batch", lambda m: (m, CE, x[:0], y[:0]), {}),
        ("loss_fn must return one loss per example", lambda m: (m, nn.CrossEntropyLoss(), x, y), {}),
        ("loss_fn must return one loss per example", lambda m: (m, lambda o, t: CE(o, t)[:, None], x, y), {}),
        ("inputs has dtype torch.float16", lambda m: (m, CE, x.half(), y), {}),
        ("inputs has integer dtype", lambda m: (m, CE, x.long(), y), {}),
        ("inputs must be a torch.Tensor", lambda m: (m, CE, x.numpy(), y), {}),
        ("dtype must be torch.float32 or torch.float64", lambda m: (m, CE, x, y), {"dtype": torch.int32}),
        ("params: 'nope' is not a parameter", lambda m: (m, CE, x, y), {"params": ["nope"]}),
        ("regularizer must have a .grad", lambda m: (m, CE, x, y), {"regularizer": 0.1}),
        ("out must be a", lambda m: (m, CE, x, y), {"out": torch.empty(4, 3, dtype=torch.float64)}),
        ("expected input with shape", lambda m: (m, CE, x[:, :, :6, :6], y), {}),  # error in forward
    ]


@pytest.mark.parametrize("api", ["per_sample_grads", "PerSampleGrads"])
def test_bad_inputs_clear_errors_and_model_untouched(api):
    model, x, y = prepared_model()
    before = model_state(model)
    fn = getattr(hessext, api)
    for message, args, kwargs in bad_calls(x, y):
        if api == "PerSampleGrads" and "out" in kwargs:
            continue
        with pytest.raises((ValueError, TypeError, RuntimeError), match=message):
            fn(*args(model), **kwargs)
        assert_same_state(model, before)
    if api == "per_sample_grads":
        with pytest.raises(ValueError, match="per_sample_grads: .*empty batch"):
            fn(model, CE, x[:0], y[:0])


def test_non_finite_parameter_named():
    model, x, y = prepared_model()
    with torch.no_grad():
        model[5].weight[0, 0] = float("nan")
    before = model_state(model)
    with pytest.raises(ValueError, match="parameter '5.weight' has non-finite values"):
        hessext.per_sample_grads(model, CE, x, y)
    assert_same_state(model, before)


def test_model_untouched_after_success():
    model, x, y = prepared_model()
    before = model_state(model)
    G = hessext.per_sample_grads(model, CE, x, y)
    assert G.shape[1] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    L = hessext.PerSampleGrads(model, CE, x, y, chunk_size=2)
    L.gram(), L @ torch.ones(L.shape[1], dtype=torch.float64), L.materialize()
    assert_same_state(model, before)
    # eval-mode answers: dropout off, BatchNorm on running statistics
    want = torch_func_per_sample_grads(
        model, CE, x, y, params=[n for n, p in model.named_parameters() if p.requires_grad]
    )
    assert relative_error(G, want) <= 1e-10
    assert_same_state(model, before)


def test_half_precision_model_rejected():
    model, x, y = make("mlp", n=3, dtype=torch.float32)
    model.half()
    before = model_state(model)
    with pytest.raises(TypeError, match="parameter '0.weight' has dtype torch.float16"):
        hessext.per_sample_grads(model, CE, x.half(), y)
    assert_same_state(model, before)
