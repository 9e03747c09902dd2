"""hessext.interpret against brute-force formulas (per-example loops in float64), numpy's PCA,
and the promise that the user's model (hooks, mode, .grad, parameters) is left as it was."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hessext import interpret as I
from hessext.models import SSHCNN, Conv1DToolbox

# float64 on both sides, the same sums in a different order: a few hundred ulps at most
RTOL = 1e-10


def _assert_close(a, b, rtol=RTOL):
    scale = b.abs().max().clamp_min(1e-300)
    assert a.shape == b.shape and float((a - b).abs().max() / scale) <= rtol, float(
        (a - b).abs().max() / scale
    )


def _ssh_model():
    model = SSHCNN(seed=0).double()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial running statistics, so eval-mode BatchNorm matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
    return model


def _x2d(n=3):
    return torch.rand(n, 1, 50, 50, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def _x1d(n=3):
    return torch.rand(n, 1, 924, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _ssh_tail(model, A):
    """The SSHCNN after block3: global average pool → fc."""
    return model.fc(A.mean(dim=(2, 3)))


def _toolbox_tail(model, A):
    """Conv1DToolbox after layer2."""
    return model.fc1(model.dropout(model.layer3(A).flatten(1)))


def _brute_grad_cam(model, x, head, tail, targets):
    """One example at a time: α_k = mean_s ∂f_c/∂A_k(s), ReLU(Σ_k α_k A_k)."""
    model.eval()
    maps = []
    for n in range(len(x)):
        A = head(x[n : n + 1]).detach().requires_grad_(True)
        y = tail(model, A)[0, targets[n]]
        (dA,) = torch.autograd.grad(y, A)
        alpha = dA.mean(dim=tuple(range(2, A.dim())), keepdim=True)
        maps.append((alpha * A).sum(1)[0].clamp_min(0).detach())
    return torch.stack(maps)


def _ssh_head(model):
    return lambda x: model.block3(model.block2(model.block1(x)))


def _toolbox_head(model):
    return lambda x: model.layer2(model.layer1(x))


def test_grad_cam_2d_matches_brute_force():
    model, x = _ssh_model(), _x2d()
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    model.train()
    got = I.grad_cam(model, x, "block3")
    assert got.dtype == torch.float64 and got.shape == (3, 26, 26)
    _assert_close(got, _brute_grad_cam(model, x, _ssh_head(model), _ssh_tail, pred))
    # explicit targets, and upsampling to the input's size
    t = torch.tensor([1, 0, 1])
    want = _brute_grad_cam(model, x, _ssh_head(model), _ssh_tail, t)
    _assert_close(I.grad_cam(model, x, model.block3, target=t), want)
    up = F.interpolate(want.unsqueeze(1), size=(50, 50), mode="bilinear", align_corners=False)[:, 0]
    _assert_close(I.grad_cam(model, x, "block3", target=t, upsample=True), up)


def test_grad_cam_1d_inner_block_matches_brute_force():
    model, x = Conv1DToolbox(seed=0).double(), _x1d()
    t = torch.tensor([0, 1, 1])
    got = I.grad_cam(model, x, "layer2", target=t)
    assert got.shape == (3, 56)
    _assert_close(got, _brute_grad_cam(model, x, _toolbox_head(model), _toolbox_tail, t))
    assert I.grad_cam(model, x, "layer2", upsample=True).shape == (3, 924)


def test_grad_cam_float32_model_in_float64():
    model32, x = _ssh_model().float(), _x2d().float()
    model64 = _ssh_model().float().double()  # the same float32 values, exactly
    got = I.grad_cam(model32, x, "block3", target=1, dtype=torch.float64)
    _assert_close(got, I.grad_cam(model64, x.double(), "block3", target=1))
    assert I.grad_cam(model32, x.float(), "block3").dtype == torch.float32


def test_cam_matches_linear_head_formula():
    model, x = _ssh_model(), _x2d()
    model.eval()
    with torch.no_grad():
        A = _ssh_head(model)(x)
        logits = model(x)
    pred = logits.argmax(1)
    got = I.cam(model, x, "block3")
    want = torch.einsum("nk,nkhw->nhw", model.fc.weight[pred].detach(), A)
    _assert_close(got, want)
    # the defining identity of CAM: spatial mean + bias = the logit
    _assert_close(got.mean(dim=(1, 2)) + model.fc.bias[pred].detach(), logits.gather(1, pred[:, None])[:, 0])
    t = torch.tensor([0, 1, 0])
    _assert_close(
        I.cam(model, x, "block3", target=t, head="fc"),
        torch.einsum("nk,nkhw->nhw", model.fc.weight[t].detach(), A),
    )
    assert I.cam(model, x, "block3", upsample=True).shape == (3, 50, 50)


def _snapshot(model):
    return (
        [p.detach().clone() for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [m.training for m in model.modules()],
        [
            (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
            for m in model.modules()
        ],
    )


def _assert_unchanged(model, snap):
    params, grads, modes, hooks = snap
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert all(
        (g is None and p.grad is None) or torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads)
    )
    assert [m.training for m in model.modules()] == modes
    assert [
        (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks)) for m in model.modules()
    ] == hooks


def test_hooks_mode_and_grad_untouched_after_success_and_error():
    model, x = _ssh_model(), _x2d()
    model.train()
    model(x).sum().backward()  # the user has gradients ...
    user_hook = model.block3.register_forward_hook(lambda *a: None)  # ... and a hook of their own
    snap = _snapshot(model)
    I.grad_cam(model, x, "block3")
    I.cam(model, x, "block3")
    I.record_activations(model, x, ["block1", "block3"])
    _assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="grad_cam: target classes must be in"):
        I.grad_cam(model, x, "block3", target=5)  # raised after the hooked forward pass
    with pytest.raises(ValueError, match="cam: found no nn.Linear with in_features = 7"):
        I.cam(model, x, "block2")
    _assert_unchanged(model, snap)

    class Exploding(nn.Module):
        def forward(self, a):
            raise RuntimeError("boom")

    model.fc = Exploding()  # an error inside the forward pass
    snap = _snapshot(model)
    for call in (
        lambda: I.grad_cam(model, x, "block3"),
        lambda: I.cam(model, x, "block3"),
        lambda: I.record_activations(model, x, "block3"),
    ):
        with pytest.raises(RuntimeError, match="boom"):
            call()
        _assert_unchanged(model, snap)
    user_hook.remove()


def test_bad_arguments_are_named():
    model, x = _ssh_model(), _x2d()
    with pytest.raises(ValueError, match="grad_cam: 'nope' is not a submodule"):
        I.grad_cam(model, x, "nope")
    with pytest.raises(ValueError, match=r"grad_cam: layer 'fc' must output \[N, K, L\]"):
        I.grad_cam(model, x, "fc")
    with pytest.raises(ValueError, match="grad_cam: x must be a non-empty batch"):
        I.grad_cam(model, x[0, 0, 0], "block3")
    shared = nn.Sequential(nn.Conv1d(1, 1, 3, padding=1))
    twice = nn.Sequential(shared, shared, nn.Flatten(), nn.Linear(8, 2)).double()
    with pytest.raises(ValueError, match="ran 2 times"):
        I.grad_cam(twice, torch.rand(2, 1, 8, dtype=torch.float64), shared)


def test_record_activations_match_manual_forward_and_chunks():
    model, x = _ssh_model(), _x2d(n=5)
    model.eval()
    with torch.no_grad():
        b1 = model.block1(x)
        b3 = model.block3(model.block2(b1))
    got = I.record_activations(model, x, ["block1", model.block3])
    assert set(got) == {"block1", "block3"}
    _assert_close(got["block1"], b1)
    _assert_close(got["block3"], b3)
    chunked = I.record_activations(model, x, ["block3"], batch_size=2)
    _assert_close(chunked["block3"], b3)


def test_activation_pca_against_numpy():
    g = torch.Generator().manual_seed(4)
    # correlated features with a clear ordering of variances
    mix = torch.randn(6, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.1])
    fit_set = (torch.randn(40, 6, generator=g, dtype=torch.float64) @ mix.T + 1.0).reshape(40, 2, 3)
    other = (torch.randn(9, 6, generator=g, dtype=torch.float64) @ mix.T).reshape(9, 2, 3)
    pca = I.ActivationPCA(3).fit(fit_set)

    X = fit_set.reshape(40, -1).numpy()
    mean = X.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(X - mean, rowvar=False))
    evals, evecs = evals[::-1], evecs[:, ::-1]
    # the same sign convention: each component's largest-magnitude entry positive
    evecs = evecs * np.sign(evecs[np.abs(evecs).argmax(0), np.arange(6)])
    # eigh of the covariance squares the condition number: agreement to ~1e-12 relative
    tol = 1e-11
    np.testing.assert_allclose(pca.explained_variance_.numpy(), evals[:3], rtol=tol)
    np.testing.assert_allclose(pca.explained_variance_ratio_.numpy(), evals[:3] / evals.sum(), rtol=tol)
    np.testing.assert_allclose(pca.components_.numpy(), evecs[:, :3].T, atol=tol)
    Y = other.reshape(9, -1).numpy()
    np.testing.assert_allclose(pca.transform(other).numpy(), (Y - mean) @ evecs[:, :3], atol=tol * 10)
    # all components: the inverse transform reconstructs exactly
    full = I.ActivationPCA().fit(fit_set)
    _assert_close(full.inverse_transform(full.transform(other)), other)
    with pytest.raises(ValueError, match="ActivationPCA.transform: features of shape"):
        pca.transform(other.reshape(9, 6))
    with pytest.raises(RuntimeError, match="call fit"):
        I.ActivationPCA().transform(other)
