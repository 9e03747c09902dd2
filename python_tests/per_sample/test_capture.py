"""hessext.per_sample_grads against the torch.func vmap(grad) oracle: float64 to 1e-10, float32
within its derived rounding bound, over MLPs, sequence Linear, 1-D/2-D CNNs with odd shapes,
groups, dilation, stride, padding, shared weights, and models mixing kernel and torch.func
layers; the real 740-parameter toolbox CNN on its 50 test rows with the L2 regulariser."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import hessext
from hessext import _extension
from hessext import testing as cases
from hessext.regularizers import L2
from hessext.testing import float32_tolerance, per_sample_cases, relative_error, torch_func_per_sample_grads

CE = nn.CrossEntropyLoss(reduction="none")
CASES = per_sample_cases()
IDS = [c[0] for c in CASES]


def make(case, n, dtype, seed=0):
    name, factory, inputs, targets = case
    torch.manual_seed(seed)
    model = factory().to(dtype)
    return model, inputs(n, dtype), targets(n)


@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_matches_torch_func(case, n):
    model, x, y = make(case, n, torch.float64)
    got = hessext.per_sample_grads(model, CE, x, y)
    want = torch_func_per_sample_grads(model, CE, x, y)
    assert got.shape == want.shape and got.dtype == torch.float64
    assert relative_error(got, want) <= 1e-10


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_within_rounding_bound(case):
    model, x, y = make(case, 5, torch.float32)
    got = hessext.per_sample_grads(model, CE, x, y)
    assert got.dtype == torch.float32
    model64 = copy.deepcopy(model).double()
    x64 = x.double() if x.is_floating_point() else x
    want = torch_func_per_sample_grads(model64, CE, x64, y)
    assert relative_error(got, want) <= float32_tolerance(model64, x64)


def test_dtype_float64_on_float32_model():
    model, x, y = make(CASES[3], 4, torch.float32)
    got = hessext.per_sample_grads(model, CE, x, y, dtype=torch.float64)
    want = torch_func_per_sample_grads(copy.deepcopy(model).double(), CE, x.double(), y)
    assert got.dtype == torch.float64 and relative_error(got, want) <= 1e-10


def test_noncontiguous_inputs():
    model, x, y = make(CASES[3], 4, torch.float64)
    x_nc = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, permuted strides
    assert not x_nc.is_contiguous()
    want = torch_func_per_sample_grads(model, CE, x, y)
    assert relative_error(hessext.per_sample_grads(model, CE, x_nc, y), want) <= 1e-10
    model, x, y = make(CASES[1], 4, torch.float64)  # sequence Linear on a transposed view
    x_nc = x.transpose(1, 2).contiguous().transpose(1, 2)
    want = torch_func_per_sample_grads(model, CE, x, y)
    assert relative_error(hessext.per_sample_grads(model, CE, x_nc, y), want) <= 1e-10


def test_conv_padding_same_and_partial_params():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 4, (2, 3), padding="same", dilation=(2, 1)),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 6, 3),
    ).double()
    x, y = torch.randn(3, 2, 5, 6, dtype=torch.float64), torch.randint(0, 3, (3,))
    chosen = ["0.bias", "3.weight"]
    got = hessext.per_sample_grads(model, CE, x, y, params=chosen)
    want = torch_func_per_sample_grads(model, CE, x, y, params=chosen)
    assert got.shape == (3, 4 + 3 * 120) and relative_error(got, want) <= 1e-10
    # tensors work as params too, in named_parameters() order whatever order they are given
    got2 = hessext.per_sample_grads(model, CE, x, y, params=[model[3].weight, model[0].bias])
    assert torch.equal(got, got2)


def test_mse_regression_and_out_argument():
    torch.manual_seed(4)
    model = cases.mlp((4, 6, 2)).double()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)

    def loss_fn(out, t):
        return (out - t).square().sum(1)

    out = torch.empty(5, 6 * 4 + 6 + 2 * 6 + 2, dtype=torch.float64)
    got = hessext.per_sample_grads(model, loss_fn, x, y, out=out)
    assert got is out
    assert relative_error(got, torch_func_per_sample_grads(model, loss_fn, x, y)) <= 1e-10


def test_regularizer_adds_gradient_to_every_row():
    model, x, y = make(CASES[0], 4, torch.float64)
    reg = L2(0.3)
    got = hessext.per_sample_grads(model, CE, x, y, regularizer=reg)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    want = torch_func_per_sample_grads(model, CE, x, y) + 0.3 * theta
    assert relative_error(got, want) <= 1e-10


def test_unflatten():
    model, x, y = make(CASES[3], 3, torch.float64)
    G = hessext.per_sample_grads(model, CE, x, y)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    parts = hessext.unflatten_params(G[1], names, shapes)
    assert list(parts) == names
    for n, p in model.named_parameters():
        assert parts[n].shape == p.shape
    batched = hessext.unflatten_params(G, names, shapes)
    assert batched[names[0]].shape == (3, *shapes[0])
    assert torch.equal(batched[names[-1]][1], parts[names[-1]])
    with pytest.raises(ValueError, match="unflatten_params"):
        hessext.unflatten_params(G[1, :-1], names, shapes)


def test_kernel_layers_in_info():
    assert hessext.kernel_layers() == ["Linear", "Conv1d", "Conv2d"]
    assert hessext.info()["per_sample_kernel_layers"] == ["Linear", "Conv1d", "Conv2d"]
    forward_ops = hessext.info()["per_sample_forward_ops"]
    assert (len(forward_ops) == 2) == _extension.has_kernel("max_pool_forward", "cpu")


# ---- the real toolbox model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def toolbox():
    model = cases.toolbox_model()
    x, y = cases.toolbox_data("test")
    return model, x, y


def test_toolbox_cnn_with_l2(toolbox):
    model, x, y = toolbox
    assert sum(p.numel() for p in model.parameters()) == 740 and x.shape == (50, 1, 924)
    reg = L2.from_weight_decay(cases.TOOLBOX_LAMBDA, cases.TOOLBOX_N_TRAIN)
    model64 = copy.deepcopy(model).double()
    theta = torch.cat([p.detach().reshape(-1) for p in model64.parameters()])
    want = torch_func_per_sample_grads(model64, CE, x.double(), y) + 0.05 / 1000 * theta
    got64 = hessext.per_sample_grads(model, CE, x, y, regularizer=reg, dtype=torch.float64)
    assert got64.shape == (50, 740)
    assert relative_error(got64, want) <= 1e-10
    got32 = hessext.per_sample_grads(model, CE, x, y, regularizer=reg)
    assert relative_error(got32, want) <= float32_tolerance(model64, x.double())
    # sanity against the published facts: 44/50 correct
    with torch.no_grad():
        assert int((model(x).argmax(1) == y).sum()) == 44


# ---- which layers the kernels serve, and why not (issue 15) -------------------------------------


def _routing(model, x, y):
    want = cases.reference_grads(model, CE, x, y)
    G = hessext.PerSampleGrads(model, CE, x, y)
    assert relative_error(G.materialize(), want) <= 1e-10
    return G


def test_fallback_reasons_say_why_not_a_kernel():
    torch.manual_seed(0)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    G = _routing(nn.Sequential(nn.Linear(4, 5), nn.Tanh(), cases.SineLinear(5, 3)).double(), x, y)
    assert G.kernel_param_names == ["0.weight", "0.bias"]
    assert "'2' (SineLinear): it is a subclass (SineLinear) of nn.Linear" in G.fallback_reasons["2.weight"]
    assert G.fallback_method == "torch.func.vmap over examples"
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    model[0].register_forward_hook(lambda m, a, o: torch.sin(o))
    G = _routing(model, x, y)
    assert G.fallback_reasons == {
        "0.weight": "'0' (Linear): it has a forward hook",
        "0.bias": "'0' (Linear): it has a forward hook",
    }
    shared = nn.Linear(4, 4)
    G = _routing(nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(4, 3)).double(), x, y)
    assert "called 2 times" in G.fallback_reasons["0.weight"]
    xt = torch.randn(6, 6, 2, dtype=torch.float64)  # T == N
    G = _routing(cases.BatchOffDim0().double(), xt, y)
    assert "is not the batch of 1 examples" in G.fallback_reasons["inner.weight"]
    assert G.fallback_method is None or "head.weight" in G.kernel_param_names


def test_inplace_relu_after_a_kernel_layer_stays_on_the_kernel_and_exact():
    """nn.ReLU(inplace=True) writes the Linear's output: its gradient is captured from a copy
    (per-sample gradients were 14-47 % off), and the kernels still serve the layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 3)).double()
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randint(0, 3, (7,))
    G = _routing(model, x, y)
    assert G.fallback_param_names == []
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(16, 3)).double()
    xc = torch.randn(7, 1, 10, dtype=torch.float64)
    assert _routing(conv, xc, y).fallback_param_names == []


def test_examples_that_interact_are_refused():
    class BatchMean(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x - x.mean(0))

    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,))
    with pytest.raises(ValueError, match="depends on the other examples of its batch"):
        hessext.per_sample_grads(BatchMean().double(), CE, x, y)


def test_non_finite_losses_named_and_kept_on_request():
    model = cases.LogFirstFeature(nn.Linear(2, 3)).double()
    x = torch.rand(5, 2, dtype=torch.float64) + 0.1
    x[3, 0] = -1.0
    y = torch.randint(0, 3, (5,))
    with pytest.raises(
        ValueError, match=r"the loss is not finite \(nan or inf\) for 1 of 5 examples \(indices \[3\]\)"
    ):
        hessext.per_sample_grads(model, CE, x, y)
    G = hessext.per_sample_grads(model, CE, x, y, check_finite=False)
    assert torch.isnan(G[3]).all() and torch.isfinite(G[[0, 1, 2, 4]]).all()
