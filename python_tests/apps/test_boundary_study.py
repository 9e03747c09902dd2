"""The decision-boundary study's analysis against independent truths: G_θ by brute force (the
torch.func Hessian, numpy's full eigendecomposition, one backward pass per point), a planted
boundary known in closed form, and the paper's data-set sizes and parameter counts."""

import numpy as np
import pytest
import torch
from torch import nn

from hessext.apps import boundary_study as study
from hessext.datasets import toy2d
from hessext.models import mlp
from hessext.testing import reference_grads, reference_hessian
from hessext.training import train

CE = nn.CrossEntropyLoss(reduction="none")


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    torch.set_num_threads(1)  # small products; a second thread only spins on a loaded machine


def test_paper_data_and_models():
    sizes = {  # the paper's table: n train/test/val and C
        "gauss": (150, 60, 90, 3),
        "hierarchical": (150, 60, 90, 4),
        "hierarchical2": (150, 60, 90, 2),
        "circles": (100, 40, 60, 2),
        "moons": (100, 40, 60, 2),
        "checkerboard_linear": (200, 80, 120, 2),
        "checkerboard_noisy": (200, 80, 120, 2),
        "intro1d": (6, 6, 6, 2),
    }
    params = {2: 10_602, 3: 10_703, 4: 10_804}
    for name, (a, b, c, C) in sizes.items():
        d = study.load_data(name)
        assert (len(d.split.y_train), len(d.split.y_test), len(d.split.y_val), d.num_classes) == (a, b, c, C)
        if name != "intro1d":
            model = study.build_model({"name": "mlp", "width": 100}, d, seed=0)
            assert sum(p.numel() for p in model.parameters()) == params[C]
    intro = study.build_model({"name": "mlp", "width": 10, "layers": 1}, study.load_data("intro1d"), 0)
    assert sum(p.numel() for p in intro.parameters()) == 42
    # random labels: the training part of the whole set's fixed permutation
    d = study.load_data("gauss")
    y_rl = study.training_labels(d, "random_labels")
    full = toy2d.permuted_labels(d.y, 28)
    assert torch.equal(y_rl, toy2d.split(d.x, full).y_train) and not torch.equal(y_rl, d.split.y_train)


def _small_problem():
    d = study.load_data("gauss")
    x, y = d.split.x_train[:45], d.split.y_train[:45]
    model = mlp(2, 16, 16, 3, seed=1)
    train(model, x, y, epochs=150, lr=0.05, batch_size=16, seed=1)
    return model.eval(), x, y


def test_g_theta_against_brute_force():
    model, x, y = _small_problem()
    spec = study.spectrum_of(model, x, y, k_top=10, progress=False)
    P = spec.num_params
    # brute force: the torch.func Hessian, numpy's eigh of all P eigenvectors, the reinforcing
    # gradient of every point by its own backward pass (label = the model's prediction)
    H = reference_hessian(model, CE, (x, y)).numpy()
    lam, V = np.linalg.eigh(H)
    with torch.no_grad():
        pred = model(x).argmax(1)
    G = reference_grads(model, CE, x, pred).numpy()
    G = G / np.linalg.norm(G, axis=1, keepdims=True)
    best = np.abs(G @ V).max(axis=0)  # [P]
    R = torch.randn(P, 5, generator=torch.Generator().manual_seed(42), dtype=torch.float64).numpy()
    R = R / np.linalg.norm(R, axis=0)
    eps = np.abs(G @ R).max(axis=0).mean()
    # no eigenvector sits on the threshold (else rounding could decide the count)
    assert np.abs(best - eps).min() > 1e-9
    assert spec.g_epsilon == pytest.approx(eps, rel=1e-12)
    assert spec.g_determined and spec.g_n_aligned == int((best >= eps).sum())
    assert spec.g_theta == (best >= eps).sum() / P
    # the spectrum: trace and top eigenvalues of the brute-force matrix (float64 rounding)
    assert spec.trace == pytest.approx(np.trace(H), rel=1e-10)
    np.testing.assert_allclose(spec.top_values.numpy(), lam[::-1][:10], rtol=1e-8, atol=1e-12 * lam.max())


def test_g_theta_needs_the_whole_range():
    """Given only the top eigenvectors, the training gradients stick out of their span: the
    count is then a lower bound and says so."""
    from hessext import boundary as B

    model, x, y = _small_problem()
    spec = study.spectrum_of(model, x, y, k_top=10, progress=False)
    top = B.generalisation_measure(model, x, spec.top_vectors[:, :3], seed=42)
    assert not top.determined and top.outside > top.epsilon
    assert top.n_aligned <= spec.g_n_aligned


def test_planted_boundary_alignment_changes_sign_exactly_there():
    """A hand-built ReLU network whose decision boundary is the line x₁ + 0.5·x₂ = 0.33:
    f_0 = 0, f_1 = relu(s) − relu(−s) = s with s = x₁ + 0.5·x₂ − 0.33. The sign of a_1 on the grid
    must change across that line and nowhere else."""
    w, c = torch.tensor([1.0, 0.5]), 0.33  # between grid lines: no grid point on it
    model = mlp(2, 2, 2, seed=0)
    with torch.no_grad():
        model[0].weight.copy_(torch.stack([w, -w]))
        model[0].bias.copy_(torch.tensor([-c, c]))
        model[2].weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
        model[2].bias.zero_()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(80, 2, generator=g) * 4 - 2
    side = (x @ w - c > 0).long()
    data = study.Data(
        "planted", "plane", 2, x, side, toy2d.Split(x, side, x, side, x, side), (-2, 2, -2, 2), 0
    )
    spec = study.spectrum_of(model, x, side, k_top=4, progress=False)
    maps = study.maps_of(model, data, spec, resolution=41, n_maps=2, progress=False)
    grid = study.plane_grid(data.box, 41)
    s = grid.points.float() @ w - c
    off = s.abs() > 1e-6  # no grid point lies on the line for these numbers; keep the check honest
    a1 = maps.grid_alignment[:, 0]
    assert bool((a1[off] != 0).all())
    agree = torch.sign(a1[off]) == torch.sign(s[off])
    assert bool(agree.all()) or bool((~agree).all())  # one sign on each side: the line, nothing else
    assert maps.sign_agreement == 1.0
    assert bool((maps.grid_prediction.long()[off] == (s[off] > 0).long()).all())
