"""The packed-tangent path of hessext.hessian on CNNs with BatchNorm (eval mode: running
statistics) and global average pools, against torch.func.hessian in float64.

Tolerance as in test_hessian_piecewise_cnn.py: both sides are float64 sums of O(n·S·P) products of
numbers of size ~1 (the BatchNorm scales γ/s are O(1) here), rounded differently; a few ulps times
the depth and the spatial sums, far below 1e-10 relative to the largest entry."""

import pytest
import torch
from torch import nn

import hessext
from hessext.regularizers import L2
from _hessian_cases import ce, flat_fn, model_state, mse, reference_hessian, rel_err, same_state
from test_hessian_piecewise_cnn import PATH, check_against_references, data, uneven

TOL = 1e-10
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
                m.weight[::2].neg_()           # negative γ too: flips the LeakyReLU side
                u(m.bias, -0.3, 0.3)
    return model


def buffers(model):
    return [b.clone() for b in model.buffers()]


def bn2d_conv():
    # affine BN right after a convolution, an affine=False BN, a global average pool
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 2), nn.BatchNorm2d(4, affine=False), nn.LeakyReLU(0.1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def bn_after_pool():
    # BN after a pool; a bias-free convolution; BN before the Flatten
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), nn.ReLU(), nn.AvgPool2d(2), nn.BatchNorm2d(3),
        nn.Conv2d(3, 2, 2), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3))


def bn1d():
    # a BN on the input (first layer), BN1d on Conv1d channels, on the flattened features of a
    # convolution (feature f of channel f // 6) and on a Linear's units
    return nn.Sequential(
        nn.BatchNorm1d(2), nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.ReLU(),
        nn.Conv1d(3, 2, 2, stride=2), nn.Flatten(), nn.BatchNorm1d(12),
        nn.Linear(12, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


def bn_chain():
    # BN after BN (affine, not, affine: the tangents stay packed through all), a 1-D global pool,
    # a BN as the last layer
    return nn.Sequential(
        nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.BatchNorm1d(3, affine=False), nn.BatchNorm1d(3),
        nn.LeakyReLU(0.2), nn.Conv1d(3, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))


MODELS = {
    "bn2d_conv": (bn2d_conv, (2, 8, 7)),
    "bn_after_pool": (bn_after_pool, (1, 11, 11)),
    "bn1d": (bn1d, (2, 15)),
    "bn_chain": (bn_chain, (2, 12)),
}


# every model with CE + L2; MSE (a constant Λ, other residual weights r) on two of them
CASES = [(name, "ce", 0.03) for name in MODELS] + [("bn2d_conv", "mse", 0.0), ("bn1d", "mse", 0.0)]


@pytest.mark.parametrize("name, loss, l2", CASES)
def test_matches_torch_func(name, loss, l2):
    torch.manual_seed(11)
    make, shape = MODELS[name]
    model = randomize_bn(make().double()).train()     # the assembly evaluates in eval mode
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
    assert rel_err(H.dense(), reference_hessian(model, ce, x, y)) <= TOL


def ssh_model():
    from hessext.models import SSHCNN
    return randomize_bn(SSHCNN(seed=0), seed=1)


def test_sshcnn_small_images():
    """hessext.models.SSHCNN (P = 1,024; its forward ends in h.mean(dim=(2, 3))) on 12x12 images
    (the model takes any size), float64, against torch.func; the HVP path agrees too."""
    model = ssh_model()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 1, 12, 12, generator=g), torch.randint(0, 2, (7,), generator=g)
    ref = reference_hessian(model, ce, x.double(), y, 0.01)
    before = model_state(model)
    H = hessext.hessian(model, ce, uneven(x, y, (3,)), regularizer=L2(0.01), strip_width=100, progress=False)
    assert PATH in H.info["method"] and H.shape == (1024, 1024)
    assert rel_err(H.dense(), ref) <= TOL
    assert same_state(before, model_state(model))
    # float32 products as the demo runs them (hessext.demo._toolbox.exact_hessian): unit roundoff
    # 6e-8 over sums of a few thousand terms per entry, summed in float64
    H32 = hessext.hessian(model, nn.CrossEntropyLoss(reduction="none"), (x, y), regularizer=L2(0.01),
                          dtype=torch.float32, strip_width=256, progress=False)
    assert PATH in H32.info["method"]
    assert rel_err(H32.dense(), ref) <= 1e-4


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
    assert rel_err(H.dense() @ V, HV) <= TOL


class MeanHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


UNSUPPORTED = {
    # an adaptive pool to more than one position mixes windows of varying sizes
    "adaptive_pool_2": lambda: nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.AdaptiveAvgPool2d(2),
                                             nn.Flatten(), nn.Linear(12, 3)),
    # a custom module whose forward is not a known chain
    "own_module": MeanHead,
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_models_take_the_hvp_path(name):
    torch.manual_seed(13)
    model = randomize_bn(UNSUPPORTED[name]().double())
    x, y, _ = data((1, 7, 7), n=6)
    H = hessext.hessian(model, ce, (x, y), progress=False)
    assert "vjp(grad)" in H.info["method"]
    assert rel_err(H.dense(), reference_hessian(model, ce, x, y)) <= TOL


def test_batch_statistics_take_the_hvp_path():
    """Without running statistics eval mode normalises by the batch's: examples interact, no
    per-example Jacobians; the HVP path is taken. Its reference is plain double backward
    (torch.autograd.functional.hessian): torch.func.hessian's vmapped forward mode differs by
    ~20% on batch-statistics BatchNorm here, while double backward and the HVP path agree."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, track_running_stats=False),
                          nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 3)).double()
    x, y, _ = data((1, 7, 7), n=6)
    H = hessext.hessian(model, ce, (x, y), progress=False)
    assert "vjp(grad)" in H.info["method"]
    theta0, f = flat_fn(model)
    ref = torch.autograd.functional.hessian(lambda th: ce(f(th, x), y).mean(), theta0)
    assert rel_err(H.dense(), ref) <= TOL
    with pytest.raises(ValueError, match="method='structured' needs"):
        hessext.hessian(model, ce, (x, y), method="structured", progress=False)


def test_bn_parameters_left_out_take_the_hvp_path():
    torch.manual_seed(14)
    model = randomize_bn(bn2d_conv().double())
    x, y, _ = data((2, 8, 7), n=5)
    names = [n for n, _ in model.named_parameters() if not n.startswith("1.")]
    H = hessext.hessian(model, ce, (x, y), params=names, progress=False)
    assert "vjp(grad)" in H.info["method"]
