"""compare_curvature against independent truths: the errors of the dense matrix of each
approximation against torch.func's Hessian and GGN computed here, an exact approximation scoring
zero, influence correlations of the exact references with themselves, leave-one-out retraining
on a converged copy (the user's model untouched), and the figures."""

import pytest
import torch
from torch import nn

import hessext
from hessext.regularizers import L2
from hessext.reporting import figures
from hessext.testing import assert_same_state, ce, model_state, mse, reference_ggn, reference_hessian


def _problem(n=20, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)
    xt, yt = torch.randn(m, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (m,), generator=g)
    return model, (x, y), (xt, yt)


def test_errors_are_those_of_the_dense_matrices():
    model, train, test = _problem()
    E = hessext.ekfac(model, ce, train)
    H, G = reference_hessian(model, ce, train), reference_ggn(model, "ce", train)
    damping = 0.05 - float(torch.linalg.eigvalsh(H)[0])  # H + δI positive definite
    r = hessext.compare_curvature(model, ce, train, ["kfac", ("mine", E)], test=test, damping=damping)
    assert "influence_errors" not in r.info
    C = E.dense()
    idx = torch.arange(20)  # layer '0': 3·5 weights + 5 biases
    for ref, M in (("hessian", H), ("ggn", G)):
        fro, op = r.errors[("mine", ref, "total")]
        assert abs(fro - float((C - M).norm() / M.norm())) <= 1e-10
        want = torch.linalg.eigvalsh(C - M).abs().max() / torch.linalg.eigvalsh(M).abs().max()
        assert abs(op - float(want)) <= 1e-10
        fro0, _ = r.errors[("mine", ref, "0")]
        Cb, Mb = C[idx][:, idx], M[idx][:, idx]
        assert abs(fro0 - float((Cb - Mb).norm() / Mb.norm())) <= 1e-10
    assert r.influence["hessian"]["spearman_hessian"] == pytest.approx(1.0)
    assert r.influence["ggn"]["spearman_ggn"] == pytest.approx(1.0)
    assert -1 <= r.influence["mine"]["spearman_hessian"] <= 1
    # below -λ_min the exact Hessian's influence is refused, and the result says why
    low = hessext.compare_curvature(model, ce, train, ["kfac"], test=test, damping=1e-6)
    assert "not positive definite" in low.info["influence_errors"]["hessian"]
    table = r.table()
    assert "| mine | hessian |" in table and "influence Spearman" in table
    fig = figures.curvature_comparison(r)
    assert len(fig.axes) == 2


def test_an_exact_approximation_scores_zero():
    # a single Linear layer under squared error: K-FAC with the exact-GGN factors is the GGN,
    # which is the Hessian (the model is linear in its parameters)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).double()
    g = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(15, 3, generator=g, dtype=torch.float64),
        torch.randn(15, 2, generator=g, dtype=torch.float64),
    )
    r = hessext.compare_curvature(model, mse, (x, y), ["kfac-ggn"], test=(x[:3], y[:3]), damping=0.01)
    for ref in ("hessian", "ggn"):
        fro, op = r.errors[("kfac-ggn", ref, "total")]
        assert fro <= 1e-12 and op <= 1e-12
    assert r.influence["kfac-ggn"]["spearman_hessian"] == pytest.approx(1.0)


def test_leave_one_out_on_a_converged_copy_leaves_the_model_alone():
    model, train, test = _problem(n=16)
    state = model_state(model)
    r = hessext.compare_curvature(
        model, ce, train, ["ekfac"], test=test, damping=0.02, regularizer=L2(0.05), loo=3, loo_steps=60
    )
    assert_same_state(model, state)
    assert r.info["converged_gradient_norm"] <= 1e-6
    for name in ("hessian", "ekfac"):
        assert -1 <= r.influence[name]["loo_pearson"] <= 1
    # at a strict minimum with little damping the exact Hessian predicts retraining well
    assert r.influence["hessian"]["loo_pearson"] >= 0.8


def test_bad_input():
    model, train, test = _problem()
    with pytest.raises(ValueError, match="approximations: unknown 'fisher'"):
        hessext.compare_curvature(model, ce, train, ["fisher"])
    with pytest.raises(ValueError, match="damping must be a number > 0"):
        hessext.compare_curvature(model, ce, train, ["kfac"], damping=0)
    with pytest.raises(ValueError, match="loo > 0 needs test"):
        hessext.compare_curvature(model, ce, train, ["kfac"], loo=2)


def test_spectral_density_figure():
    model, train, _ = _problem()
    s = hessext.spectral_density(hessext.ekfac(model, ce, train), num_probes=2, num_steps=10)
    assert len(figures.spectral_density(s).axes) == 1
