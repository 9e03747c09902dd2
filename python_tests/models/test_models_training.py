"""Architectures (parameter counts by hand, the published checkpoint) and the seeded trainer."""

import copy
import math

import numpy as np
import pytest
import torch

from hessext import models
from hessext.datasets import toy2d
from hessext.testing import toolbox_dir
from hessext.training import PlateauStop, Recipe, fit, train, train_mlps


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
    # the decision-boundary paper's other counts: C = 2 and 4, and the intro's 1-10-2
    assert [models.num_parameters(models.mlp(2, 100, 100, c)) for c in (2, 4)] == [10_602, 10_804]
    assert models.num_parameters(models.mlp(1, 10, 2)) == 42


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


# ------------------------------------------------------------------ the SSH study's recipe


def test_ssh_recipe_is_the_papers():
    """The values of the paper's 100-CNN run (its parameters.txt: batch 64, lr 1e-04, momentum
    0.9, weight decay 0.1, early stopping patience 10 / tolerance 0.005 / warmup 100, 1000
    epochs), with cross-entropy on the logits (docs/ssh-study.md: BCE on a two-class softmax
    is the same loss)."""
    r = models.SSH_RECIPE
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.batch_size, r.max_epochs, r.loss) == (
        "sgd",
        1e-4,
        0.9,
        0.1,
        64,
        1000,
        "ce",
    )
    assert r.early_stopping == PlateauStop(patience=10, tolerance=0.005, warmup=100)


def test_bce_on_softmax_is_cross_entropy():
    """Why the recipe may use CE on logits: BCELoss(softmax(f), onehot) over two classes equals
    the mean cross-entropy, value and gradient."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(9, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (9,), generator=g)
    bce = torch.nn.BCELoss()(f.softmax(1), torch.nn.functional.one_hot(y, 2).double())
    ce = torch.nn.functional.cross_entropy(f, y)
    (gb,) = torch.autograd.grad(bce, f)
    (gc,) = torch.autograd.grad(ce, f)
    torch.testing.assert_close(bce, ce)
    torch.testing.assert_close(gb, gc)


def test_ssh_cnn_architecture_and_thermometer_width():
    m = models.SSHCNN()
    kinds = [type(x).__name__ for x in m.block1]
    assert kinds == ["Conv2d", "BatchNorm2d", "LeakyReLU", "UniformDropout"]
    assert all(
        isinstance(x, torch.nn.Dropout) and x.p == 0.5 for b in (m.block1, m.block2, m.block3) for x in b[3:]
    )
    assert [m.block1[0].stride, m.block1[0].padding, m.block1[0].bias] == [(2, 2), (2, 2), None]
    # the paper's thermometer network: every width times the number of levels
    L = 3
    t = models.SSHCNN(in_channels=L, width=L)
    expected = (
        5 * L * L * 16
        + 2 * 5 * L
        + 7 * L * 5 * L * 9
        + 2 * 7 * L
        + 9 * L * 7 * L * 9
        + 2 * 9 * L
        + 9 * L * 2
        + 2
    )
    assert models.num_parameters(t) == expected
    assert t(torch.rand(2, L, 50, 50)).shape == (2, 2)
    with pytest.raises(ValueError, match="width"):
        models.SSHCNN(width=0)


def test_uniform_dropout_is_dropout_in_distribution():
    from hessext.models.common import UniformDropout

    d = UniformDropout(0.5)
    x = torch.ones(200_000)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = d(x)
    kept = (out != 0).double().mean().item()
    assert set(torch.unique(out).tolist()) == {0.0, 2.0}
    assert abs(kept - 0.5) <= 4 * (0.25 / x.numel()) ** 0.5  # 4 binomial standard errors
    d.eval()
    assert d(x) is x
    d.train()
    xg = torch.ones(10, requires_grad=True)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        y = d(xg)
    y.sum().backward()
    assert torch.equal(xg.grad, y.detach())  # the gradient is the same mask and scale


def _original_early_stopper(patience, min_delta, warmup):
    """The original's EarlyStopper (src/training_utils.py), transcribed as the oracle."""
    state = {"min": math.inf}

    def early_stop(history, epoch):
        validation_loss = history[-1]
        if validation_loss < state["min"]:
            state["min"] = validation_loss
        elif epoch >= warmup:
            if all(loss - state["min"] <= min_delta for loss in history[-patience:]):
                return True
        return False

    return early_stop


def test_plateau_stop_is_the_originals():
    rng = np.random.default_rng(0)
    for trial in range(200):
        patience, warmup = int(rng.integers(1, 6)), int(rng.integers(0, 12))
        tol = float(rng.choice([0.0, 0.005, 0.05]))
        # decreasing, then noisy plateaus (the interesting case)
        losses = (
            np.exp(-np.arange(60) / rng.uniform(3, 20)) + rng.normal(0, rng.choice([1e-4, 1e-2]), 60)
        ).tolist()
        rule, oracle = PlateauStop(patience, tol, warmup), _original_early_stopper(patience, tol, warmup)
        ours = next((e for e in range(60) if rule.should_stop(losses[: e + 1])), None)
        theirs = next((e for e in range(60) if oracle(losses[: e + 1], e)), None)
        assert ours == theirs, (trial, patience, tol, warmup)


def _heavy_ball_reference(model, x, y, *, epochs, lr, momentum, wd, batch, seed):
    """SGD with momentum written out: buf = μ·buf + (g + λθ), θ -= lr·buf (PyTorch's
    convention, no dampening), on the same seeded batch order as train/fit."""
    params = list(model.parameters())
    bufs = [None] * len(params)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        for s in range(0, len(y), batch):
            idx = perm[s : s + batch]
            grads = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[idx]), y[idx]), params)
            with torch.no_grad():
                for k, (p, g) in enumerate(zip(params, grads)):
                    d = g + wd * p
                    bufs[k] = d.clone() if bufs[k] is None else momentum * bufs[k] + d
                    p -= lr * bufs[k]
    return model


def test_fit_is_heavy_ball_sgd():
    x, y = _gaussians()
    x = x.double()
    start = models.mlp(2, 16, 3, seed=1).double()
    recipe = Recipe(lr=0.05, momentum=0.9, weight_decay=0.1, batch_size=32, max_epochs=3)
    model, log = fit(copy.deepcopy(start), recipe, (x, y), seed=2)
    ref = _heavy_ball_reference(
        copy.deepcopy(start), x, y, epochs=3, lr=0.05, momentum=0.9, wd=0.1, batch=32, seed=2
    )
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert log.epochs == 3 and not log.stopped_early and log.val_loss == []
    # train() with momentum is the same loop
    same, hist = train(copy.deepcopy(start), x, y, epochs=3, lr=0.05, momentum=0.9, weight_decay=0.1,
                       batch_size=32, seed=2)  # fmt: skip
    assert hist == log.train_loss
    assert all(torch.equal(a, b) for a, b in zip(same.parameters(), model.parameters()))


def test_fit_validation_loss_and_early_stop():
    x, y = _gaussians()
    # validation labels shifted by one class: learning the training set raises the validation
    # loss, so after the warm-up the first epoch that is not a new minimum stops the run
    xv, yv = x[:100], (y[:100] + 1) % 3
    model = models.mlp(2, 16, 3, seed=1)
    recipe = Recipe(lr=0.02, batch_size=64, max_epochs=50, early_stopping=PlateauStop(2, 10.0, 3))
    model, log = fit(model, recipe, (x, y), (xv, yv), seed=0)
    assert log.stopped_early and log.epochs < 50 and len(log.val_loss) == log.epochs
    assert PlateauStop(2, 10.0, 3).should_stop(log.val_loss)
    assert not any(PlateauStop(2, 10.0, 3).should_stop(log.val_loss[:e]) for e in range(1, log.epochs))
    model.eval()
    with torch.no_grad():
        exact = torch.nn.functional.cross_entropy(model(xv), yv).item()
    assert log.val_loss[-1] == pytest.approx(exact, rel=1e-6)
    with pytest.raises(ValueError, match="val_data"):
        fit(model, recipe, (x, y), seed=0)
    with pytest.raises(ValueError, match="momentum"):
        Recipe(lr=0.1, batch_size=8, max_epochs=1, optimizer="adam", momentum=0.5)
    with pytest.raises(ValueError, match="momentum"):
        train(model, x, y, epochs=1, lr=0.1, batch_size=8, seed=0, momentum=1.0)
    with pytest.raises(ValueError, match="patience"):
        PlateauStop(patience=0)


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


# ---------------------------------------------------------------------------------------------
# train_mlps: the fused many-model loop against train(), model by model


def _train_each(starts, x, ys, seeds, **kw):
    out = []
    for m, y, seed in zip(starts, ys, seeds):
        m = copy.deepcopy(m)
        _, h = train(m, x, y, seed=seed, **kw)
        out.append((m, h))
    return out


@pytest.mark.parametrize("sizes, shared_labels", [((2, 24, 24, 3), True), ((2, 16, 3), False)])
def test_train_mlps_matches_train(sizes, shared_labels, restore_threads):
    torch.set_num_threads(1)
    x, y = _gaussians()
    seeds = [3, 8, 11]
    starts = [models.mlp(*sizes, seed=s) for s in seeds]
    ys = [y] * 3 if shared_labels else [y, y.flip(0), toy2d.permuted_labels(y)]
    kw = dict(epochs=4, lr=0.02, batch_size=64)  # 150 points: batches 64, 64 and 22
    fused = [copy.deepcopy(m) for m in starts]
    hist = train_mlps(fused, x, y if shared_labels else torch.stack(ys), seeds=seeds, **kw)
    for (ref, ref_hist), m, h in zip(_train_each(starts, x, ys, seeds, **kw), fused, hist):
        # the same operations in the same order; batched GEMMs may round differently from
        # single ones on some BLAS, so compare to rounding: 12 steps, each update's relative
        # error ≲ (reduction length 150) · eps32 ≈ 2e-5 of the step, the steps ≪ the weights
        for (name, p), q in zip(m.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
        np.testing.assert_allclose(h, ref_hist, rtol=1e-6)
        if torch.backends.mkl.is_available():  # MKL's batched GEMM is its single GEMM: bit for bit
            assert all(torch.equal(p, q) for p, q in zip(m.parameters(), ref.parameters()))
            assert h == ref_hist


def test_train_mlps_full_batch_and_long_runs_agree(restore_threads):
    torch.set_num_threads(1)
    x, y = toy2d.intro1d()
    starts = [models.mlp(1, 10, 2, seed=s) for s in (0, 1)]
    fused = [copy.deepcopy(m) for m in starts]
    hist = train_mlps(fused, x, y, epochs=300, lr=0.002, batch_size=6, seeds=[0, 1], chunk=7)
    for (ref, ref_hist), m, h in zip(
        _train_each(starts, x, [y, y], [0, 1], epochs=300, lr=0.002, batch_size=6), fused, hist
    ):
        for p, q in zip(m.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert len(h) == 300 and h[-1] == pytest.approx(ref_hist[-1], rel=1e-5)


def test_train_mlps_refuses_what_it_cannot_fuse():
    x, y = _gaussians()
    kw = dict(epochs=1, lr=0.02, batch_size=64)
    with pytest.raises(ValueError, match="nn.Sequential Linear"):
        train_mlps([models.SSHCNN()], x, y, seeds=[0], **kw)
    tanh = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match="nn.Sequential Linear"):
        train_mlps([tanh], x, y, seeds=[0], **kw)
    with pytest.raises(ValueError, match="same layer sizes"):
        train_mlps([models.mlp(2, 4, 3), models.mlp(2, 5, 3)], x, y, seeds=[0, 1], **kw)
    with pytest.raises(ValueError, match="one seed per model"):
        train_mlps([models.mlp(2, 4, 3)], x, y, seeds=[0, 1], **kw)
    with pytest.raises(ValueError, match="integer labels"):
        train_mlps([models.mlp(2, 4, 3)], x, y.float(), seeds=[0], **kw)
    with pytest.raises(ValueError, match="x must be"):
        train_mlps([models.mlp(3, 4, 3)], x, y, seeds=[0], **kw)
