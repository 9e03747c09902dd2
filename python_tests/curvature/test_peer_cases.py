"""The curvature test cases of the peers, ported: curvlinops' operator cases (test/cases.py and
test/utils.py: classification and regression with mean and sum reduction, extra input/output axes,
mini-batches, a CNN, dropout and BatchNorm, weight sharing by reuse and by tying, an in-place
activation, a convolutional U-net-like model) and BackPACK's second-order problem set
(test/extensions/secondorder/secondorder_settings.py: the activation, pooling, convolution and
grouped-convolution settings, Linear with extra axes, multi-dimensional cross-entropy, padding,
slicing, BCE with soft labels), for hessian, ggn and hessian_operator, against autograd double
backward in float64 (torch.func's forward-over-reverse is wrong on some layers in torch 2.13).

Our own ports of their case lists (read, not copied), written as a user of hessext writes them:
the loss as the user has it (mean- or sum-reduced, or per example), the truth from an
independently written per-example loss, since hessext's curvature is that of the MEAN of the
per-example losses (a sum-reduced loss is evaluated one example at a time). Where a peer
accepts what our contract refuses (dict inputs, a plain function as model) we check the clear
error. Tolerance: float64, P <= ~800, so rounding <= ~1e-12 relative; TOL = 1e-9.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hessext
from hessext.testing import (
    assert_same_state,
    autograd_ggn,
    autograd_hessian,
    autograd_hvp,
    model_state,
    relative_error,
)

TOL = 1e-9


# --------------------------------------------------------------------------- per-example losses
def ce(out, y):
    """Cross-entropy with the classes on dim 1, averaged over any other axes of one example."""
    return F.cross_entropy(out, y, reduction="none").reshape(out.shape[0], -1).mean(1)


def ce_sum(out, y):
    return F.cross_entropy(out, y, reduction="none").reshape(out.shape[0], -1).sum(1)


def bce(out, y):
    return F.binary_cross_entropy_with_logits(out, y, reduction="none").reshape(out.shape[0], -1).mean(1)


def bce_sum(out, y):
    return F.binary_cross_entropy_with_logits(out, y, reduction="none").reshape(out.shape[0], -1).sum(1)


def mse(out, y):
    return (out - y).square().reshape(out.shape[0], -1).mean(1)


def mse_sum(out, y):
    return (out - y).square().reshape(out.shape[0], -1).sum(1)


# the user's losses (torch's reduced ones) and the per-example truth they stand for
MEAN_CE, SUM_CE = (nn.CrossEntropyLoss(), ce), (nn.CrossEntropyLoss(reduction="sum"), ce_sum)
MEAN_BCE, SUM_BCE = (nn.BCEWithLogitsLoss(), bce), (nn.BCEWithLogitsLoss(reduction="sum"), bce_sum)
MEAN_MSE, SUM_MSE = (nn.MSELoss(), mse), (nn.MSELoss(reduction="sum"), mse_sum)


# --------------------------------------------------------------------------- small modules
class ClassesFirst(nn.Module):
    """[N, T, C] → [N, C, T]: the layout torch's cross-entropy wants (curvlinops' weight-sharing
    'expand' setting with CE)."""

    def forward(self, x):
        return x.transpose(1, 2)


class ChannelsLast(nn.Module):
    """[N, C, H, W] → [N, H, W, C] (curvlinops' Rearrange in Conv2dModel/UnetModel)."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class SplitConcat(nn.Module):
    """curvlinops' SplitConcatModel: one Linear applied to both halves of the input."""

    def __init__(self, d=3, bias=False):
        super().__init__()
        self.linear, self.d = nn.Linear(d, d, bias=bias), d

    def forward(self, x):
        a, b = x.split(self.d, dim=-1)
        return torch.cat([self.linear(a), self.linear(b)], -1)


class TiedSplitConcat(nn.Module):
    """curvlinops' WeightTiedSplitConcatModel: two Linear modules sharing their weight."""

    def __init__(self, d=3, bias1=True, bias2=False):
        super().__init__()
        self.linear1, self.linear2, self.d = nn.Linear(d, d, bias=bias1), nn.Linear(d, d, bias=bias2), d
        self.linear2.weight = self.linear1.weight

    def forward(self, x):
        a, b = x.split(self.d, dim=-1)
        return torch.cat([self.linear1(a), self.linear2(b)], -1)


class Pad(nn.Module):
    """BackPACK's Pad module (F.pad)."""

    def __init__(self, pad, value=0.0):
        super().__init__()
        self.pad, self.value = pad, value

    def forward(self, x):
        return F.pad(x, self.pad, value=self.value)


class Slice(nn.Module):
    """BackPACK's Slicing module."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def forward(self, x):
        return x[self.index]


class DictInput(nn.Module):
    """curvlinops' ModelWithDictInput: reads x from a dict (outside our contract)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 3))

    def forward(self, data):
        return self.net(data["x"])


def _frozen_head(model):
    model[-1].requires_grad_(False)
    return model


def _features(mods, shape):
    with torch.no_grad():
        return nn.Sequential(*mods)(torch.zeros(1, *shape)).numel()


def _act_cnn(act, bias):
    """BackPACK's make_simple_act_setting: Conv2d(3, 2, 2) → act → Flatten → Linear (frozen)."""
    return _frozen_head(nn.Sequential(nn.Conv2d(3, 2, 2, bias=bias), act(), nn.Flatten(), nn.Linear(72, 5)))


def _conv_cnn(conv, shape):
    """BackPACK's make_simple_cnn_setting: conv → ReLU → Flatten → Linear(·, 5) (frozen)."""
    return _frozen_head(nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(_features([conv], shape), 5)))


def _pool_cnn(conv_cls, pool, shape):
    """BackPACK's make_simple_pooling_setting: conv(3, 2, 2) → ReLU → pool → Flatten → Linear."""
    conv = conv_cls(3, 2, 2)
    head = nn.Linear(_features([conv, pool], shape), 5)
    return _frozen_head(nn.Sequential(conv, nn.ReLU(), pool, nn.Flatten(), head))


def _classes(c, *shape):
    return lambda g: torch.randint(0, c, shape, generator=g)


def _soft(*shape):
    return lambda g: torch.rand(*shape, generator=g, dtype=torch.float64)


def _normal(*shape):
    return lambda g: torch.randn(*shape, generator=g, dtype=torch.float64)


# (id, model, input shape, targets, (user's loss, per-example truth)); data as two mini-batches
# of the given size each (curvlinops) or one (BackPACK)
CURVLINOPS = [
    (
        "mlp-ce-mean",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 3)),
        (10,),
        _classes(3),
        MEAN_CE,
    ),
    (
        "mlp-ce-sum",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 3)),
        (10,),
        _classes(3),
        SUM_CE,
    ),
    (
        "mlp-bce-one-output",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 1)),
        (10,),
        _soft(1),
        MEAN_BCE,
    ),
    (
        "mlp-bce-two-outputs",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2)),
        (10,),
        _soft(2),
        MEAN_BCE,
    ),
    (
        "mlp-bce-sum",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2)),
        (10,),
        _soft(2),
        SUM_BCE,
    ),
    (
        "mlp-mse-mean",
        lambda: nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)),
        (8,),
        _normal(3),
        MEAN_MSE,
    ),
    (
        "mlp-mse-sum",
        lambda: nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)),
        (8,),
        _normal(3),
        SUM_MSE,
    ),
    (
        "sequence-ce-mean",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 3), ClassesFirst()),
        (5, 10),
        _classes(3, 5),
        MEAN_CE,
    ),
    (
        "sequence-ce-sum",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 3), ClassesFirst()),
        (5, 10),
        _classes(3, 5),
        SUM_CE,
    ),
    (
        "sequence-bce-mean",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2)),
        (5, 10),
        _soft(5, 2),
        MEAN_BCE,
    ),
    (
        "sequence-bce-sum",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2)),
        (5, 10),
        _soft(5, 2),
        SUM_BCE,
    ),
    (
        "sequence-mse-mean",
        lambda: nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)),
        (5, 8),
        _normal(5, 3),
        MEAN_MSE,
    ),
    (
        "sequence-mse-sum",
        lambda: nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)),
        (5, 8),
        _normal(5, 3),
        SUM_MSE,
    ),
    (
        "dropout-eval",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.Dropout(), nn.ReLU(), nn.Linear(5, 2)).train(),
        (10,),
        _classes(2),
        MEAN_CE,
    ),
    (
        "batchnorm-eval",
        lambda: nn.Sequential(nn.Linear(10, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)),
        (10,),
        _classes(2),
        MEAN_CE,
    ),
    ("split-concat-reuse", lambda: SplitConcat(3, bias=True), (6,), _normal(6), MEAN_MSE),
    ("split-concat-tied", lambda: TiedSplitConcat(3), (6,), _normal(6), MEAN_MSE),
    (
        "inplace-relu",
        lambda: nn.Sequential(nn.Linear(6, 3), nn.ReLU(inplace=True), nn.Linear(3, 2)),
        (6,),
        _normal(2),
        MEAN_MSE,
    ),
    (
        "conv2d-expand",
        lambda: nn.Sequential(nn.Conv2d(3, 2, 4, padding=2), ChannelsLast()),
        (3, 4, 4),
        _normal(5, 5, 2),
        MEAN_MSE,
    ),
    (
        "conv2d-reduce",
        lambda: nn.Sequential(nn.Conv2d(3, 2, 4, padding=2), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        (3, 4, 4),
        _classes(2),
        MEAN_CE,
    ),
    (
        "unet",
        lambda: nn.Sequential(
            nn.Conv2d(3, 2, 3, padding=1, stride=2),
            nn.Conv2d(2, 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2, 3, 3, padding=1),
            ChannelsLast(),
        ),
        (3, 4, 4),
        _normal(4, 4, 3),
        MEAN_MSE,
    ),
]

_ACTS = [nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.LogSigmoid, nn.ELU, nn.SELU]
BACKPACK = [
    ("example", lambda: nn.Sequential(nn.Linear(10, 5)), (10,), _classes(5), MEAN_CE),
    ("linear-linear", lambda: nn.Sequential(nn.Linear(10, 7), nn.Linear(7, 5)), (10,), _classes(5), MEAN_CE),
    (
        "linear-relu-linear-sum",
        lambda: nn.Sequential(nn.Linear(10, 7), nn.ReLU(), nn.Linear(7, 5)),
        (10,),
        _classes(5),
        SUM_CE,
    ),
    (
        "linear-sigmoid-linear-mse",
        lambda: nn.Sequential(nn.Linear(10, 7), nn.Sigmoid(), nn.Linear(7, 5)),
        (10,),
        _normal(5),
        MEAN_MSE,
    ),
    *[
        (f"act-{a.__name__}-bias{b}", (lambda a=a, b=b: _act_cnn(a, b)), (3, 7, 7), _classes(5), MEAN_CE)
        for a in _ACTS
        for b in (True, False)
    ],
    ("maxpool1d", lambda: _pool_cnn(nn.Conv1d, nn.MaxPool1d(2, 1), (3, 7)), (3, 7), _classes(5), SUM_CE),
    (
        "maxpool1d-dilation",
        lambda: _pool_cnn(nn.Conv1d, nn.MaxPool1d(2, 1, 0, 2), (3, 7)),
        (3, 7),
        _classes(5),
        SUM_CE,
    ),
    (
        "maxpool1d-ceil",
        lambda: _pool_cnn(nn.Conv1d, nn.MaxPool1d(2, 1, 0, 2, False, True), (3, 7)),
        (3, 7),
        _classes(5),
        SUM_CE,
    ),
    (
        "maxpool2d",
        lambda: _pool_cnn(nn.Conv2d, nn.MaxPool2d(2, 1), (3, 11, 11)),
        (3, 11, 11),
        _classes(5),
        SUM_CE,
    ),
    (
        "maxpool2d-dilation",
        lambda: _pool_cnn(nn.Conv2d, nn.MaxPool2d(2, 1, 0, 2), (3, 7, 7)),
        (3, 7, 7),
        _classes(5),
        SUM_CE,
    ),
    ("avgpool1d", lambda: _pool_cnn(nn.Conv1d, nn.AvgPool1d(2, 1), (3, 7)), (3, 7), _classes(5), SUM_CE),
    (
        "avgpool1d-ceil",
        lambda: _pool_cnn(nn.Conv1d, nn.AvgPool1d(2, 1, 0, True), (3, 7)),
        (3, 7),
        _classes(5),
        SUM_CE,
    ),
    (
        "avgpool2d",
        lambda: _pool_cnn(nn.Conv2d, nn.AvgPool2d(2, 1), (3, 11, 11)),
        (3, 11, 11),
        _classes(5),
        SUM_CE,
    ),
    (
        "avgpool2d-ceil",
        lambda: _pool_cnn(nn.Conv2d, nn.AvgPool2d(2, 1, 0, True), (3, 7, 7)),
        (3, 7, 7),
        _classes(5),
        SUM_CE,
    ),
    ("conv1d", lambda: _conv_cnn(nn.Conv1d(3, 2, 2), (3, 7)), (3, 7), _classes(5), SUM_CE),
    (
        "conv1d-dilation-stride",
        lambda: _conv_cnn(nn.Conv1d(2, 3, 2, 2, 0, 2), (2, 7)),
        (2, 7),
        _classes(5),
        SUM_CE,
    ),
    (
        "conv1d-stride-padding",
        lambda: _conv_cnn(nn.Conv1d(3, 2, 2, 2, 1), (3, 7)),
        (3, 7),
        _classes(5),
        SUM_CE,
    ),
    ("conv1d-all", lambda: _conv_cnn(nn.Conv1d(3, 6, 2, 4, 2, 3), (3, 8)), (3, 8), _classes(5), SUM_CE),
    (
        "conv1d-no-bias",
        lambda: _conv_cnn(nn.Conv1d(3, 2, 2, 4, 2, 1, 1, False), (3, 7)),
        (3, 7),
        _classes(5),
        SUM_CE,
    ),
    ("conv2d", lambda: _conv_cnn(nn.Conv2d(3, 2, 2), (3, 7, 7)), (3, 7, 7), _classes(5), SUM_CE),
    ("conv2d-all", lambda: _conv_cnn(nn.Conv2d(3, 6, 2, 4, 2, 3), (3, 8, 8)), (3, 8, 8), _classes(5), SUM_CE),
    (
        "conv2d-no-bias",
        lambda: _conv_cnn(nn.Conv2d(3, 2, 2, 4, 2, 1, 1, False), (3, 7, 7)),
        (3, 7, 7),
        _classes(5),
        SUM_CE,
    ),
    ("conv3d", lambda: _conv_cnn(nn.Conv3d(3, 2, 2), (3, 2, 5, 5)), (3, 2, 5, 5), _classes(5), SUM_CE),
    ("convtranspose1d", lambda: _conv_cnn(nn.ConvTranspose1d(3, 2, 2), (3, 7)), (3, 7), _classes(5), SUM_CE),
    (
        "convtranspose2d-dilation",
        lambda: _conv_cnn(nn.ConvTranspose2d(2, 4, 2, 1, 0, 0, 1, True, 2), (2, 5, 5)),
        (2, 5, 5),
        _classes(5),
        SUM_CE,
    ),
    ("group-conv1d", lambda: _conv_cnn(nn.Conv1d(6, 4, 2, 1, 0, 1, 2), (6, 7)), (6, 7), _classes(5), SUM_CE),
    (
        "group-conv2d",
        lambda: _conv_cnn(nn.Conv2d(6, 3, 2, 1, 0, 1, 3), (6, 7, 5)),
        (6, 7, 5),
        _classes(5),
        SUM_CE,
    ),
    (
        "linear-one-additional-mse",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2), nn.Flatten()),
        (4, 5),
        _normal(8),
        MEAN_MSE,
    ),
    (
        "linear-three-additional-mse-sum",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2), nn.Flatten()),
        (4, 2, 3, 5),
        _normal(48),
        SUM_MSE,
    ),
    (
        "linear-two-additional-ce",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Sigmoid(), nn.Linear(3, 2), nn.Flatten()),
        (4, 2, 5),
        _classes(16),
        MEAN_CE,
    ),
    (
        "multi-d-cross-entropy",
        lambda: nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)),
        (4, 2, 3, 5),
        _classes(4, 2, 3, 2),
        SUM_CE,
    ),
    (
        "pad-conv",
        lambda: nn.Sequential(
            nn.Conv2d(3, 2, 2), Pad((1, 1, 0, 2)), nn.Conv2d(2, 2, 3, stride=2), nn.Flatten(), nn.Linear(8, 2)
        ),
        (3, 4, 4),
        _normal(2),
        MEAN_MSE,
    ),
    (
        "pad-value-conv",
        lambda: nn.Sequential(
            nn.Conv2d(3, 2, 3, padding=1),
            nn.ReLU(),
            Pad((1, 1, 2, 0, 1, 2), value=1.0),
            nn.Conv2d(5, 2, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8, 3),
        ),
        (3, 4, 4),
        _classes(3),
        MEAN_CE,
    ),
    (
        "slicing",
        lambda: nn.Sequential(
            nn.Conv2d(3, 2, 2, padding=1),
            Slice((slice(None), 0, slice(None, None, 2), slice(0, 2))),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6, 4),
        ),
        (3, 4, 5),
        _classes(4),
        MEAN_CE,
    ),
    (
        "slicing-twice",
        lambda: nn.Sequential(
            nn.Conv2d(3, 2, 2, padding=1),
            Slice((slice(None), slice(None), 2)),
            nn.ReLU(),
            Slice((slice(None), 1)),
            nn.Linear(6, 4),
        ),
        (3, 4, 5),
        _normal(4),
        MEAN_MSE,
    ),
    (
        "bce-soft-labels",
        lambda: nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1)),
        (6,),
        _soft(1),
        MEAN_BCE,
    ),
    (
        "bce-binary-labels-sum",
        lambda: nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1)),
        (6,),
        lambda g: torch.randint(0, 2, (1,), generator=g).double(),
        SUM_BCE,
    ),
]


def _data(shape, targets, batches, seed=0):
    """Mini-batches of 3 and 4 (curvlinops) or one of 3 (BackPACK); targets per example."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in batches:
        x = torch.rand(n, *shape, generator=g, dtype=torch.float64)
        out.append((x, torch.stack([targets(g) for _ in range(n)])))
    return out


def _curvature_case(make, shape, targets, losses, batches):
    torch.manual_seed(0)
    model = make().double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    user_loss, truth_loss = losses
    data = _data(shape, targets, batches)
    whole = (torch.cat([x for x, _ in data]), torch.cat([y for _, y in data]))
    return model, user_loss, truth_loss, data, whole


def _check_curvatures(model, user_loss, truth_loss, data, whole):
    state = model_state(model)
    H = autograd_hessian(model, truth_loss, whole)
    got = hessext.hessian(model, user_loss, data)
    assert relative_error(got.dense(), H) <= TOL, (relative_error(got.dense(), H), got.info["method"])
    G = autograd_ggn(model, truth_loss, whole)
    assert relative_error(hessext.ggn(model, user_loss, data).dense(), G) <= TOL
    V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert relative_error(hessext.hessian_operator(model, user_loss, data) @ V, H @ V) <= TOL
    assert_same_state(model, state)


@pytest.mark.parametrize("case", CURVLINOPS, ids=[c[0] for c in CURVLINOPS])
def test_curvlinops_cases(case):
    _, make, shape, targets, losses = case
    _check_curvatures(*_curvature_case(make, shape, targets, losses, batches=(3, 4)))


@pytest.mark.parametrize("case", BACKPACK, ids=[c[0] for c in BACKPACK])
def test_backpack_second_order_settings(case):
    _, make, shape, targets, losses = case
    _check_curvatures(*_curvature_case(make, shape, targets, losses, batches=(3,)))


def test_curvlinops_cnn_products_and_dataloader():
    """curvlinops' CNN case (P = 784) through a DataLoader: Hessian and operator products
    against autograd Hessian-vector products, the GGN's against its truth's."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4, 10),
    ).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 20, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=False)
    state = model_state(model)
    V = torch.randn(784, 4, generator=g, dtype=torch.float64)
    HV = autograd_hvp(model, ce, (x, y), V)
    H = hessext.hessian(model, nn.CrossEntropyLoss(), loader)
    assert relative_error(H.dense() @ V, HV) <= TOL
    assert relative_error(hessext.hessian_operator(model, nn.CrossEntropyLoss(), loader) @ V, HV) <= TOL
    assert_same_state(model, state)


def test_what_our_contract_refuses_clearly():
    """curvlinops takes dict inputs and a plain function with a parameter dict; hessext's
    contract is a tensor batch and an nn.Module, and says so."""
    model = DictInput().double()
    data = [({"x": torch.rand(3, 10, dtype=torch.float64)}, torch.randint(0, 3, (3,)))]
    with pytest.raises(
        TypeError, match="not an \\(inputs, targets\\) pair of tensors|must be a torch.Tensor"
    ):
        hessext.hessian(model, nn.CrossEntropyLoss(), data)
    weight = torch.rand(3, 10, dtype=torch.float64)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        hessext.hessian(lambda x: x @ weight.T, nn.MSELoss(), (torch.rand(3, 10), torch.rand(3, 3)))
