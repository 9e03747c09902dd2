"""The packed-tangent path of hessext.hessian (GGN + residual of piecewise-linear CNNs, also with
BatchNorm in eval mode and global average pools) against torch.func.hessian in float64.

Tolerance: both sides are float64 sums of O(n·S·P) products of numbers of size ~1; the GGN factor
products and the residual blocks round differently from the reference's nested forward/backward,
a few ulps times the depth and the spatial sums, far below 1e-10 relative to the largest entry."""

import pytest
import torch
from torch import nn

import hessext
from hessext.regularizers import L2
from hessext.testing import (
    ce,
    flat_fn,
    model_state,
    mse,
    reference_ggn,
    reference_hessian,
    relative_error,
    uneven,
)

TOL = 1e-10
PATH = "packed-tangent residual"


def cnn1d_deep():
    # four weight layers: stride, padding, dilation, a bias-free conv, in-place ReLU, both pools,
    # so that blocks between non-adjacent layers (conv-conv, conv-linear) are exercised
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, stride=2, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(2),
        nn.Conv1d(3, 4, 2, dilation=2, bias=False),
        nn.LeakyReLU(0.1),
        nn.AvgPool1d(2, ceil_mode=True),
        nn.Conv1d(4, 2, 2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6, 5),
        nn.Dropout(0.3),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


def cnn2d_deep():
    return nn.Sequential(
        nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)),
        nn.ReLU(),
        nn.MaxPool2d(2, padding=1),
        nn.Conv2d(3, 4, 2, dilation=(2, 1), padding="same"),
        nn.LeakyReLU(0.2),
        nn.AvgPool2d(2, count_include_pad=False, padding=1),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
        nn.Identity(),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


def cnn2d_conv_head():
    # preprocessing pool before the first layer; a convolution as the last weight layer
    return nn.Sequential(
        nn.AvgPool2d(2),
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=2),
        nn.Flatten(),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


def flatten_mlp():
    # an MLP behind a Flatten (3-D inputs): not the MLP closed form's, handled here
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 5), nn.LeakyReLU(0.05), nn.Linear(5, 3)
    )


def conv_pair():
    # two convolutions back to back (nothing between them to linearise)
    return nn.Sequential(nn.Conv1d(2, 3, 4, stride=3), nn.Conv1d(3, 1, 3, padding=1), nn.Flatten())


def avgpool_between():
    # an average pool without padding between weight layers (strided-window mean), with an
    # uneven kernel/stride and a divisor override
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.AvgPool2d((2, 3), stride=(1, 2), divisor_override=5),
        nn.ReLU(),
        nn.Conv2d(2, 1, 2),
        nn.Flatten(),
    )


def conv_then_avgpool():
    # convolutions directly followed by an average pool after the first layer: the unpacked
    # tangents go through both as one strided convolution (2-D: stride, dilation, padding and a
    # divisor override; 1-D: 'valid' padding, pool stride != kernel)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.Conv2d(2, 3, (3, 2), stride=(1, 2), dilation=(2, 1), padding=(1, 0)),
        nn.AvgPool2d((2, 3), stride=(2, 1), divisor_override=4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(36, 3),
    )


def conv1d_then_avgpool():
    return nn.Sequential(
        nn.Conv1d(2, 3, 3),
        nn.ReLU(),
        nn.Conv1d(3, 2, 2, stride=2, padding="valid"),
        nn.AvgPool1d(3, stride=2),
        nn.Flatten(),
        nn.LeakyReLU(0.3),
        nn.Linear(12, 3),
    )


def nested():
    # nested Sequentials (parameter names "0.0.weight", ...): the chain is expanded
    return nn.Sequential(
        nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU()),
        nn.Sequential(nn.Conv1d(3, 2, 3), nn.MaxPool1d(2)),
        nn.ReLU(),
        nn.Sequential(nn.Flatten(), nn.Linear(16, 3)),
    )


def single_conv():
    # one weight layer: the Hessian is the GGN (no residual blocks)
    return nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten())


MODELS = {
    "cnn1d_deep": (cnn1d_deep, (2, 23)),
    "cnn2d_deep": (cnn2d_deep, (2, 11, 5)),
    "cnn2d_conv_head": (cnn2d_conv_head, (1, 12, 12)),
    "flatten_mlp": (flatten_mlp, (3, 4)),
    "conv_pair": (conv_pair, (2, 11)),
    "avgpool_between": (avgpool_between, (1, 7, 8)),
    "nested": (nested, (2, 20)),
    "conv_then_avgpool": (conv_then_avgpool, (1, 11, 14)),
    "conv1d_then_avgpool": (conv1d_then_avgpool, (2, 30)),
    "single_conv": (single_conv, (1, 9, 9)),
}


def data(shape, n=17, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *shape), generator=g, dtype=torch.float64)
    return x, torch.randint(0, c, (n,), generator=g), torch.randn(n, c, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("loss, l2", [("ce", 0.03), ("mse", 0.0)])
def test_matches_torch_func(name, loss, l2):
    torch.manual_seed(1)
    make, shape = MODELS[name]
    model = make().double().train()  # the assembly evaluates in eval mode (Dropout off)
    check_against_references(model, shape, loss, l2)


def check_against_references(model, shape, loss, l2):
    """Hessian and GGN of ``model`` (packed-tangent path, strips cutting through layer blocks,
    uneven mini-batches) against torch.func in float64; the model's state is left untouched."""
    x, y_ce, y_mse = data(shape)
    y, loss_fn = (y_ce, ce) if loss == "ce" else (y_mse, mse)
    ref = reference_hessian(model.eval(), loss_fn, (x, y), l2=l2)
    ref_ggn = reference_ggn(model, loss, (x, y), l2=l2)
    model.train()
    before = model_state(model)
    reg = L2(l2) if l2 else None
    # strip width 13: strips start and end inside layer blocks
    H = hessext.hessian(model, loss_fn, uneven(x, y), regularizer=reg, strip_width=13, progress=False)
    assert PATH in H.info["method"]
    assert relative_error(H.dense(), ref, "max") <= TOL
    assert torch.equal(H.dense(), H.dense().T)
    assert before == model_state(model)
    # the GGN of the same models takes its Jacobians from the layer inputs too
    G = hessext.ggn(model, loss_fn, uneven(x, y), regularizer=reg, strip_width=13, progress=False)
    assert "layer inputs" in G.info["method"]
    assert relative_error(G.dense(), ref_ggn, "max") <= TOL
    assert before == model_state(model)


def test_tiny_budget_and_method_structured():
    """memory_budget=1 forces chunks of one example and one packed tangent; 'structured' picks
    this path for a CNN; all agree with the HVP path."""
    torch.manual_seed(2)
    model = cnn1d_deep().double()
    x, y, _ = data((2, 23), n=9)
    ref = reference_hessian(model, ce, (x, y))
    H = hessext.hessian(model, ce, (x, y), memory_budget=1, strip_width=7, progress=False)
    assert PATH in H.info["method"] and relative_error(H.dense(), ref, "max") <= TOL
    Hs = hessext.hessian(model, ce, uneven(x, y, (4,)), method="structured", progress=False)
    assert PATH in Hs.info["method"] and relative_error(Hs.dense(), ref, "max") <= TOL
    Hh = hessext.hessian(model, ce, (x, y), method="hvp", progress=False)
    assert "vjp(grad)" in Hh.info["method"] and relative_error(Hh.dense(), ref, "max") <= TOL


def test_size_check_counts_the_method_peak():
    """The residual blocks are written into the result's upper triangle, so the packed-tangent
    path needs no room for them (the old bound: P²/2 float64 beside the result); the size check
    counts the method's own estimate, refuses below it with the bytes needed, and passes at it."""
    model = cnn1d_deep().double()
    x, y, _ = data((2, 23))
    P = sum(p.numel() for p in model.parameters())
    H = hessext.hessian(model, ce, (x, y), memory_budget=1 << 20, progress=False)
    need = H.info["peak_estimate_bytes"]
    assert 8 * P * P < need
    again = hessext.hessian(model, ce, (x, y), memory_budget=1 << 20, max_bytes=need, progress=False)
    assert torch.equal(again.dense(), H.dense())
    with pytest.raises(
        hessext.curvature.HessianTooLargeError, match=rf"needs {need:,} bytes.*hessian_operator"
    ):
        hessext.hessian(model, ce, (x, y), memory_budget=1 << 20, max_bytes=need - 1, progress=False)


def test_float32_model():
    """A float32 model at dtype=float32: products in float32 (unit roundoff 6e-8) over sums of at
    most a few hundred terms per entry, summed in float64: relative error well below 1e-4."""
    torch.manual_seed(3)
    model = cnn2d_deep()
    x, y, _ = data((2, 11, 5), n=20)
    ref = reference_hessian(model, ce, (x, y))
    H = hessext.hessian(model, ce, (x.float(), y), dtype=torch.float32, strip_width=31, progress=False)
    assert PATH in H.info["method"] and H.info["dtype"] == "float32"
    assert H.dense().dtype == torch.float64
    assert relative_error(H.dense(), ref, "max") <= 1e-4
    # dtype=float64 (the default) on the float32 model runs it in float64 on this path too
    H64 = hessext.hessian(model, ce, (x.float(), y), progress=False)
    assert PATH in H64.info["method"]
    assert relative_error(H64.dense(), reference_hessian(model, ce, (x.float().double(), y)), "max") <= TOL


def test_reduced_loss():
    torch.manual_seed(4)
    model = cnn2d_conv_head().double()
    x, y, _ = data((1, 12, 12), n=6)
    ref = reference_hessian(model, ce, (x, y))
    H = hessext.hessian(model, torch.nn.CrossEntropyLoss(), (x, y), progress=False)
    assert PATH in H.info["method"] and relative_error(H.dense(), ref, "max") <= TOL


class DoubledInput(nn.Sequential):
    """A Sequential whose forward is not the chain of its modules."""

    def forward(self, x):
        return super().forward(2 * x) * x.flatten(1)[:, :3]


UNSUPPORTED = {
    "own_forward": lambda: DoubledInput(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 21, 3)),
    "tanh": lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 21, 3)),
    "groups2": lambda: nn.Sequential(
        nn.Conv1d(2, 4, 3, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 21, 3)
    ),
    # BatchNorm is supported (test_hessian_batchnorm_cnn.py), an adaptive pool to 3 positions is not
    "batchnorm_adaptive_pool": lambda: nn.Sequential(
        nn.Conv1d(2, 3, 3),
        nn.BatchNorm1d(3),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(3),
        nn.Flatten(),
        nn.Linear(9, 3),
    ),
    "pool_after_linear": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(46, 6), nn.ReLU(), nn.MaxPool1d(2), nn.Linear(3, 3)
    ),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_models_take_the_hvp_path(name):
    torch.manual_seed(5)
    model = UNSUPPORTED[name]().double()
    x, y, _ = data((2, 23), n=8)
    H = hessext.hessian(model, ce, (x, y), progress=False)
    assert "vjp(grad)" in H.info["method"]
    assert relative_error(H.dense(), reference_hessian(model, ce, (x, y)), "max") <= TOL
    with pytest.raises(ValueError, match="method='structured' needs"):
        hessext.hessian(model, ce, (x, y), method="structured", progress=False)


def test_partial_params_take_the_hvp_path():
    torch.manual_seed(6)
    model = cnn1d_deep().double()
    x, y, _ = data((2, 23), n=8)
    H = hessext.hessian(model, ce, (x, y), params=["0.weight", "3.weight"], progress=False)
    assert "vjp(grad)" in H.info["method"]


def test_package_cnns():
    """hessext.models' CNNs (custom modules whose forward is a known chain) take this path:
    Conv1DToolbox against torch.func, MNISTCNN3 (P = 7,203: too large for the reference) against
    forward-over-reverse Hessian-vector products of the matrix-free operator."""
    from hessext.models import MNISTCNN3, Conv1DToolbox

    torch.manual_seed(7)
    model = Conv1DToolbox(seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 1, 924, generator=g), torch.randint(0, 2, (5,), generator=g)
    H = hessext.hessian(model, ce, (x, y), regularizer=L2(0.05), progress=False)
    assert PATH in H.info["method"]
    assert relative_error(H.dense(), reference_hessian(model, ce, (x.double(), y), l2=0.05), "max") <= TOL
    model = MNISTCNN3(seed=0)
    x, y = torch.randn(4, 1, 28, 28, generator=g), torch.randint(0, 3, (4,), generator=g)
    H = hessext.hessian(model, ce, (x, y), progress=False)
    assert PATH in H.info["method"]
    V = torch.randn(H.shape[0], 3, generator=g, dtype=torch.float64)
    HV = hessext.hessian_operator(model, ce, (x, y)) @ V
    assert relative_error(H.dense() @ V, HV, "max") <= TOL


# ---------------------------------------------------------------------------------------------
# BatchNorm (running statistics) and global average pools

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def randomize_bn(model, seed=0):
    """Non-trivial running statistics and affine parameters (fresh ones are μ=0, var=1, γ=1, β=0,
    which would hide a missing scale or shift)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda t, lo, hi: t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g, dtype=t.dtype))
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, BATCHNORMS):
                continue
            if m.running_mean is not None:
                u(m.running_mean, -0.5, 0.5)
                u(m.running_var, 0.5, 2.0)
            if m.affine:
                u(m.weight, 0.5, 1.5)
                m.weight[::2].neg_()  # negative γ too: flips the LeakyReLU side
                u(m.bias, -0.3, 0.3)
    return model


def buffers(model):
    return [b.clone() for b in model.buffers()]


def bn2d_conv():
    # affine BN right after a convolution, an affine=False BN, a global average pool
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 2),
        nn.BatchNorm2d(4, affine=False),
        nn.LeakyReLU(0.1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def bn_after_pool():
    # BN after a pool; a bias-free convolution; BN before the Flatten
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.BatchNorm2d(3),
        nn.Conv2d(3, 2, 2),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(18, 3),
    )


def bn1d():
    # a BN on the input (first layer), BN1d on Conv1d channels, on the flattened features of a
    # convolution (feature f of channel f // 6) and on a Linear's units
    return nn.Sequential(
        nn.BatchNorm1d(2),
        nn.Conv1d(2, 3, 3),
        nn.BatchNorm1d(3),
        nn.ReLU(),
        nn.Conv1d(3, 2, 2, stride=2),
        nn.Flatten(),
        nn.BatchNorm1d(12),
        nn.Linear(12, 5),
        nn.BatchNorm1d(5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )


def bn_chain():
    # BN after BN (affine, not, affine: the tangents stay packed through all), a 1-D global pool,
    # a BN as the last layer
    return nn.Sequential(
        nn.Conv1d(2, 3, 3),
        nn.BatchNorm1d(3),
        nn.BatchNorm1d(3, affine=False),
        nn.BatchNorm1d(3),
        nn.LeakyReLU(0.2),
        nn.Conv1d(3, 4, 3, padding=1),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
        nn.BatchNorm1d(3),
    )


BN_MODELS = {
    "bn2d_conv": (bn2d_conv, (2, 8, 7)),
    "bn_after_pool": (bn_after_pool, (1, 11, 11)),
    "bn1d": (bn1d, (2, 15)),
    "bn_chain": (bn_chain, (2, 12)),
}


# every model with CE + L2; MSE (a constant Λ, other residual weights r) on two of them
BN_CASES = [(name, "ce", 0.03) for name in BN_MODELS] + [("bn2d_conv", "mse", 0.0), ("bn1d", "mse", 0.0)]


@pytest.mark.parametrize("name, loss, l2", BN_CASES)
def test_bn_matches_torch_func(name, loss, l2):
    torch.manual_seed(11)
    make, shape = BN_MODELS[name]
    model = randomize_bn(make().double()).train()  # the assembly evaluates in eval mode
    bufs = buffers(model)
    check_against_references(model, shape, loss, l2)
    # the running statistics are not updated (the model is evaluated in eval mode)
    assert all(torch.equal(a, b) for a, b in zip(bufs, buffers(model)))


def test_tiny_budget():
    """memory_budget=1: chunks of one example and one packed tangent (a BN's two tangents apart)."""
    torch.manual_seed(12)
    model = randomize_bn(bn1d().double())
    x, y, _ = data((2, 15), n=4)
    H = hessext.hessian(model, ce, (x, y), memory_budget=1, strip_width=7, progress=False)
    assert PATH in H.info["method"]
    assert relative_error(H.dense(), reference_hessian(model, ce, (x, y)), "max") <= TOL


def ssh_model():
    from hessext.models import SSHCNN

    return randomize_bn(SSHCNN(seed=0), seed=1)


def test_sshcnn_small_images():
    """hessext.models.SSHCNN (P = 1,024; its forward ends in h.mean(dim=(2, 3))) on 12x12 images
    (the model takes any size), float64, against torch.func; the HVP path agrees too."""
    model = ssh_model()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 1, 12, 12, generator=g), torch.randint(0, 2, (7,), generator=g)
    ref = reference_hessian(model, ce, (x.double(), y), l2=0.01)
    before = model_state(model)
    H = hessext.hessian(model, ce, uneven(x, y, (3,)), regularizer=L2(0.01), strip_width=100, progress=False)
    assert PATH in H.info["method"] and H.shape == (1024, 1024)
    assert relative_error(H.dense(), ref, "max") <= TOL
    assert before == model_state(model)
    # float32 products as the demo runs them (hessext.demo._toolbox.exact_hessian): unit roundoff
    # 6e-8 over sums of a few thousand terms per entry, summed in float64
    H32 = hessext.hessian(
        model,
        nn.CrossEntropyLoss(reduction="none"),
        (x, y),
        regularizer=L2(0.01),
        dtype=torch.float32,
        strip_width=256,
        progress=False,
    )
    assert PATH in H32.info["method"]
    assert relative_error(H32.dense(), ref, "max") <= 1e-4


def test_sshcnn_full_size_against_operator():
    """SSHCNN on its real 1x50x50 inputs: H V against the matrix-free forward-over-reverse
    operator (the torch.func dense reference would be too slow here)."""
    model = ssh_model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 1, 50, 50, generator=g), torch.randint(0, 2, (3,), generator=g)
    H = hessext.hessian(model, ce, uneven(x, y, (2,)), progress=False)
    assert PATH in H.info["method"]
    V = torch.randn(1024, 3, generator=g, dtype=torch.float64)
    HV = hessext.hessian_operator(model, ce, (x, y)) @ V
    assert relative_error(H.dense() @ V, HV, "max") <= TOL


class MeanHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


BN_UNSUPPORTED = {
    # an adaptive pool to more than one position mixes windows of varying sizes
    "adaptive_pool_2": lambda: nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 3)
    ),
    # a custom module whose forward is not a known chain
    "own_module": MeanHead,
}


@pytest.mark.parametrize("name", list(BN_UNSUPPORTED))
def test_bn_unsupported_models_take_the_hvp_path(name):
    torch.manual_seed(13)
    model = randomize_bn(BN_UNSUPPORTED[name]().double())
    x, y, _ = data((1, 7, 7), n=6)
    H = hessext.hessian(model, ce, (x, y), progress=False)
    assert "vjp(grad)" in H.info["method"]
    assert relative_error(H.dense(), reference_hessian(model, ce, (x, y)), "max") <= TOL


def test_batch_statistics_take_the_hvp_path():
    """Without running statistics eval mode normalises by the batch's: examples interact, no
    per-example Jacobians; the HVP path is taken. Its reference is plain double backward
    (torch.autograd.functional.hessian): torch.func.hessian's vmapped forward mode differs by
    ~20% on batch-statistics BatchNorm here, while double backward and the HVP path agree."""
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3, track_running_stats=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 5 * 5, 3),
    ).double()
    x, y, _ = data((1, 7, 7), n=6)
    H = hessext.hessian(model, ce, (x, y), progress=False)
    assert "vjp(grad)" in H.info["method"]
    theta0, f = flat_fn(model)
    ref = torch.autograd.functional.hessian(lambda th: ce(f(th, x), y).mean(), theta0)
    assert relative_error(H.dense(), ref, "max") <= TOL
    with pytest.raises(ValueError, match="method='structured' needs"):
        hessext.hessian(model, ce, (x, y), method="structured", progress=False)


def test_bn_parameters_left_out_take_the_hvp_path():
    torch.manual_seed(14)
    model = randomize_bn(bn2d_conv().double())
    x, y, _ = data((2, 8, 7), n=5)
    names = [n for n, _ in model.named_parameters() if not n.startswith("1.")]
    H = hessext.hessian(model, ce, (x, y), params=names, progress=False)
    assert "vjp(grad)" in H.info["method"]
