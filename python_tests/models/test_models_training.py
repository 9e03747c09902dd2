"""Architectures (parameter counts by hand, the published checkpoint) and the seeded trainer."""

import copy

import numpy as np
import pytest
import torch

from hessext import models
from hessext.datasets import toy2d
from hessext.testing import toolbox_dir
from hessext.training import train


def _reference(name):
    return toolbox_dir() / name


def test_parameter_counts():
    # Counted by hand from the layer shapes (weights + biases).
    conv1d = (5 * 1 * 15 + 5) + (8 * 5 * 5 + 8) + (10 * 8 * 2 + 10) + (2 * 140 + 2)
    ssh_cnn = 5 * 1 * 4 * 4 + 2 * 5 + 7 * 5 * 3 * 3 + 2 * 7 + 9 * 7 * 3 * 3 + 2 * 9 + 9 * 2 + 2
    mlp3 = (2 * 100 + 100) + (100 * 100 + 100) + (100 * 3 + 3)
    mnist = (16 * 9 + 16) + (32 * 16 * 9 + 32) + (800 * 3 + 3)
    assert (conv1d, mlp3, mnist) == (740, 10_703, 7_203)  # the figures the studies quote
    assert models.num_parameters(models.Conv1DToolbox()) == conv1d
    assert models.num_parameters(models.SSHCNN()) == ssh_cnn
    assert models.num_parameters(models.mlp(2, 100, 100, 3)) == mlp3
    assert models.num_parameters(models.MNISTCNN3()) == mnist


def test_output_shapes():
    assert models.Conv1DToolbox()(torch.rand(3, 1, 924)).shape == (3, 2)
    assert models.SSHCNN()(torch.rand(3, 1, 50, 50)).shape == (3, 2)
    assert models.mlp(2, 100, 100, 4)(torch.rand(3, 2)).shape == (3, 4)
    assert models.MNISTCNN3()(torch.rand(3, 1, 28, 28)).shape == (3, 3)


def test_seeded_construction_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = models.SSHCNN(seed=4), models.SSHCNN(seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = models.mlp(2, 5, 3, seed=5)
    assert not torch.equal(c[0].weight, models.mlp(2, 5, 3, seed=6)[0].weight)
    with pytest.raises(ValueError, match="sizes"):
        models.mlp(2)


def test_conv1d_toolbox_loads_checkpoint_and_scores_44_of_50():
    state = torch.load(_reference("Conv1D_original_l005_12site.pt"), map_location="cpu")
    model = models.Conv1DToolbox()
    model.load_state_dict(state, strict=True)
    model.eval()
    test = np.loadtxt(_reference("ED_size12_full_even_more_test.csv"), delimiter=",")
    val = np.loadtxt(_reference("ED_size12_full_validation.csv"), delimiter=",")
    # The README's normalisation: one global min and max over the validation and test rows.
    both = np.concatenate([test[:, 1:], val[:, 1:]])
    lo, hi = both.min(), both.max()
    x = torch.tensor((test[:, 1:] - lo) / (hi - lo), dtype=torch.float32).unsqueeze(1)
    with torch.no_grad():
        predicted = model(x).argmax(1).numpy()
    wrong = np.nonzero(predicted != test[:, 0].astype(int))[0]
    assert len(test) - len(wrong) == 44
    assert wrong.tolist() == [21, 22, 23, 24, 25, 26]  # as the README says


def _gaussians():
    x, y = toy2d.three_gaussians(300, seed=0)
    parts = toy2d.split(x, y, seed=0)
    return parts.x_train, parts.y_train


def test_train_is_bit_reproducible_with_dropout_and_batchnorm():
    # Small images keep it fast; the network is fully convolutional up to the global pool.
    x = torch.rand(16, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 2
    start = models.SSHCNN(seed=0)
    runs = []
    for _ in range(2):
        model, history = train(
            copy.deepcopy(start), x, y, epochs=2, lr=0.01, batch_size=8, seed=3, optimizer="adam"
        )
        runs.append((model.state_dict(), history))
    (a, ha), (b, hb) = runs
    assert ha == hb and all(torch.equal(a[k], b[k]) for k in a)
    other, _ = train(copy.deepcopy(start), x, y, epochs=2, lr=0.01, batch_size=8, seed=4, optimizer="adam")
    assert not torch.equal(other.state_dict()["fc.weight"], a["fc.weight"])


def test_mlp_learns_three_gaussians_with_the_papers_sgd():
    x, y = _gaussians()
    state = torch.get_rng_state()
    model = models.mlp(2, 100, 100, 3, seed=0).eval()
    model, history = train(model, x, y, epochs=10, lr=0.02, batch_size=64, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # caller's RNG untouched
    assert not model.training  # mode restored
    assert len(history) == 10 and history[-1] < history[0]
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).double().mean().item()
    assert accuracy > 0.95


def test_train_bad_arguments_change_nothing():
    x, y = _gaussians()
    model = models.mlp(2, 10, 3, seed=0)
    before = copy.deepcopy(model.state_dict())
    for kwargs, match in [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=-1), "batch_size"),
        (dict(lr=-0.1), "lr"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(loss="hinge"), "loss"),
        (dict(lr_schedule="step"), "lr_schedule"),
    ]:
        args = dict(epochs=1, lr=0.02, batch_size=64, seed=0) | kwargs
        with pytest.raises(ValueError, match=match):
            train(model, x, y, **args)
    with pytest.raises(ValueError, match="equal length"):
        train(model, x, y[:-1], epochs=1, lr=0.02, batch_size=64, seed=0)
    with pytest.raises(ValueError, match="integer labels"):
        train(model, x, y.float(), epochs=1, lr=0.02, batch_size=64, seed=0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cosine_schedule_is_torchs_annealing_step_by_step():
    # plain SGD on a one-weight least-squares problem, one example per batch: every update is
    # w ← w − lr_t · 2x(wx − y) with lr_t = lr·(1 + cos(π t / T))/2, written out here by hand
    x = torch.tensor([[1.0], [2.0], [-1.5]], dtype=torch.float64)
    y = torch.tensor([[0.5], [1.0], [2.0]], dtype=torch.float64)
    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(0.3)
    train(model, x, y, epochs=4, lr=0.1, batch_size=1, seed=0, loss="mse", lr_schedule="cosine")
    order_gen = torch.Generator().manual_seed(0)
    w, t, total = 0.3, 0, 4 * 3
    for _ in range(4):
        for i in torch.randperm(3, generator=order_gen).tolist():
            lr_t = 0.1 * (1 + np.cos(np.pi * t / total)) / 2
            w -= lr_t * 2 * x[i, 0].item() * (w * x[i, 0].item() - y[i, 0].item())
            t += 1
    assert model.weight.item() == pytest.approx(w, rel=1e-12)


def test_momentum_and_decaying_lr_match_a_hand_written_loop():
    """Full-batch SGD with momentum and lr_e = lr·(final/lr)^(e/(E-1)), against torch.optim.SGD
    driven by hand (float64: the two agree to rounding)."""
    x, y = _gaussians()
    x = x.double()
    start = models.mlp(2, 16, 3, seed=1).double()
    epochs, lr, final = 5, 0.1, 0.01
    ours, _ = train(
        copy.deepcopy(start),
        x,
        y,
        epochs=epochs,
        lr=lr,
        final_lr=final,
        momentum=0.9,
        batch_size=len(y),
        seed=0,
    )
    ref = copy.deepcopy(start)
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9)
    for e in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * (final / lr) ** (e / (epochs - 1))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_sample_weights_zero_equals_dropping_the_examples():
    x, y = _gaussians()
    x = x.double()
    keep = torch.arange(len(y)) % 3 != 0
    start = models.mlp(2, 16, 3, seed=2).double()
    weighted, _ = train(
        copy.deepcopy(start),
        x,
        y,
        epochs=3,
        lr=0.05,
        batch_size=len(y),
        seed=0,
        sample_weight=keep.double() * 2.5,
    )
    subset, _ = train(
        copy.deepcopy(start), x[keep], y[keep], epochs=3, lr=0.05, batch_size=int(keep.sum()), seed=0
    )
    for a, b in zip(weighted.parameters(), subset.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="sample_weight"):
        train(
            copy.deepcopy(start),
            x,
            y,
            epochs=1,
            lr=0.1,
            batch_size=8,
            seed=0,
            sample_weight=-torch.ones(len(y)),
        )
    with pytest.raises(ValueError, match="momentum"):
        train(
            copy.deepcopy(start), x, y, epochs=1, lr=0.1, batch_size=8, seed=0, momentum=0.9, optimizer="adam"
        )
