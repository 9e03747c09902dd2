"""K-FAC and EK-FAC against independent truths: the exact GGN (torch.func, float64) where K-FAC is
exact, the exact GGN / empirical Fisher rotated into the K-FAC eigenbasis (brute force), the
factors' definitions by unfolding, the dense matrix of the same approximation for every method
of the interface, and clear refusals of what K-FAC does not cover."""

import math
import os
import tempfile

import pytest
import torch
from torch import nn

import hessext
from hessext.curvature import NotPositiveDefiniteError
from hessext.regularizers import L2, Penalty
from hessext.testing import (
    CNN2d,
    assert_same_state,
    ce,
    model_state,
    mse,
    reference_ggn,
    reference_grads,
    reference_hessian,
    relative_error,
    run_distributed,
    uneven,
)

# float64 sums of O(100) terms of size O(1): rounding stays far below this
EXACT = 1e-12


def _data(n=24, d=4, c=3, seed=0, classes=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (
        torch.randint(0, c, (n,), generator=g)
        if classes
        else torch.randn(n, c, generator=g, dtype=torch.float64)
    )
    return x, y


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _eigenbasis_diagonal(block, matrix):
    """diag(Qᵀ M_b Q) of the block's rows/columns of a full [P, P] matrix, by brute force."""
    idx = block.index
    Q = block.eigenvectors(torch.arange(block.size))
    return torch.diagonal(Q.T @ matrix[idx][:, idx] @ Q)


@pytest.mark.parametrize("bias", [True, False])
def test_kfac_is_the_exact_ggn_of_a_linear_gaussian_model(bias):
    # f = W x + b under squared error: J = [x, 1]ᵀ ⊗ I, Λ = 2I, so GGN = E[x' x'ᵀ] ⊗ 2I = A ⊗ S
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=bias).double()
    x, y = _data(classes=False)
    K = hessext.kfac(model, mse, (x, y), fisher="exact-ggn", progress=False)
    G = reference_ggn(model, "mse", (x, y))
    assert relative_error(K.dense(), G) <= EXACT
    # EK-FAC refits the eigenvalues to the same matrix: exact as well
    E = hessext.ekfac(model, mse, (x, y), fisher="exact-ggn", progress=False)
    assert relative_error(E.dense(), G) <= EXACT
    assert K.info["kind"] == "kfac" and E.info["kind"] == "ekfac"


def test_ekfac_eigenvalues_are_the_ggn_diagonal_in_the_kfac_eigenbasis():
    model = _mlp()
    x, y = _data()
    E = hessext.ekfac(model, ce, (x, y), fisher="exact-ggn", progress=False)
    G = reference_ggn(model, "ce", (x, y))
    for b in E.blocks:
        want = _eigenbasis_diagonal(b, G)
        assert relative_error(b.eigenvalues(), want, "max") <= EXACT, b.name
    # and the empirical Fisher's: E[g gᵀ] from per-example gradients (one autograd call each)
    Ee = hessext.ekfac(model, ce, (x, y), progress=False)
    grads = reference_grads(model, ce, x, y)
    F_emp = grads.T @ grads / x.shape[0]
    for b in Ee.blocks:
        assert relative_error(b.eigenvalues(), _eigenbasis_diagonal(b, F_emp), "max") <= EXACT


def test_conv_layers_use_kfac_expand_and_ekfac_is_exact_in_its_basis():
    torch.manual_seed(0)
    model = CNN2d().double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    K = hessext.kfac(model, ce, (x, y), progress=False)
    conv = K.block("conv")
    # A over the n·T unfolded patches with the appended 1, S = (1/n) Σ_{n,t} g gᵀ
    patches = torch.nn.functional.unfold(x, 3).transpose(1, 2).reshape(-1, 9)
    patches = torch.cat([patches, torch.ones(patches.shape[0], 1, dtype=torch.float64)], 1)
    A = patches.T @ patches / patches.shape[0]
    out = {}
    h = model.conv.register_forward_hook(lambda m, a, o: out.setdefault("y", o))
    loss = ce(model(x), y).sum()
    h.remove()
    (dy,) = torch.autograd.grad(loss, out["y"])
    rows = dy.permute(0, 2, 3, 1).reshape(-1, 2)
    S = rows.T @ rows / x.shape[0]
    la, ls = conv.factor_eigenvalues
    assert relative_error(la, torch.linalg.eigvalsh(A), "max") <= EXACT
    assert relative_error(ls, torch.linalg.eigvalsh(S), "max") <= EXACT
    # EK-FAC's eigenvalues: the empirical Fisher (per-example gradients summed over positions)
    E = hessext.ekfac(model, ce, (x, y), progress=False)
    grads = reference_grads(model, ce, x, y)
    F_emp = grads.T @ grads / x.shape[0]
    for b in E.blocks:
        assert relative_error(b.eigenvalues(), _eigenbasis_diagonal(b, F_emp), "max") <= EXACT


def test_interface_equals_the_dense_matrix_of_the_same_approximation():
    model = _mlp()
    x, y = _data()
    for build in (hessext.kfac, hessext.ekfac):
        C = build(model, ce, (x, y), progress=False)
        D = C.dense()
        P = C.num_params
        V = torch.randn(P, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        assert relative_error(C @ V, D @ V) <= EXACT
        delta = 0.05
        assert (
            relative_error(
                C.solve(V, damping=delta),
                torch.linalg.solve(D + delta * torch.eye(P, dtype=torch.float64), V),
            )
            <= 1e-10
        )
        assert math.isclose(C.trace(), float(D.trace()), rel_tol=EXACT)
        assert math.isclose(
            C.logdet(damping=delta),
            float(torch.logdet(D + delta * torch.eye(P, dtype=torch.float64))),
            rel_tol=1e-10,
        )
        lam, U = C.top_eigenpairs(4)
        exact = torch.linalg.eigvalsh(D).flip(0)[:4]
        assert relative_error(lam, exact, "max") <= 1e-10
        assert relative_error(D @ U, U * lam, "max") <= 1e-10
        assert relative_error(C.diagonal(), D.diagonal(), "max") <= EXACT
        assert C.memory_bytes > 0
        assert ("EK-FAC" if build is hessext.ekfac else "K-FAC") in C.describe()
        # heuristic damping: 0.1 × the mean eigenvalue of each block
        heur = C.solve(V, damping="heuristic")
        parts = torch.empty_like(V)
        for b in C.blocks:
            d = 0.1 * float(b.eigenvalues().mean())
            Db = b.dense()
            parts[b.index] = torch.linalg.solve(Db + d * torch.eye(b.size, dtype=torch.float64), V[b.index])
        assert relative_error(heur, parts) <= 1e-10


def test_singular_factors_need_positive_damping():
    # cross-entropy gradients sum to zero over the classes: S is singular, so is K-FAC
    model = _mlp()
    x, y = _data()
    K = hessext.kfac(model, ce, (x, y), progress=False)
    V = torch.ones(K.num_params, dtype=torch.float64)
    with pytest.raises(NotPositiveDefiniteError, match="damping"):
        K.solve(V, damping=0.0)
    with pytest.raises(NotPositiveDefiniteError, match="damping"):
        K.logdet(damping=0.0)
    with pytest.raises(ValueError, match="damping must be >= 0"):
        K.solve(V, damping=-1.0)
    with pytest.raises(ValueError, match="damping must be a number >= 0 or 'heuristic'"):
        K.solve(V, damping="large")
    with pytest.warns(RuntimeWarning, match="dropped"):
        X, record = K.pinv(V, rcond=1e-8, return_record=True)
    assert record["dropped"] > 0 and torch.isfinite(X).all()


def test_regularizer_and_minibatches_and_recomputed_second_pass():
    model = _mlp()
    x, y = _data(n=13)
    E = hessext.ekfac(model, ce, (x, y), progress=False)
    # uneven mini-batches, and a memory budget of 0 that forces the second pass to recompute
    E2 = hessext.ekfac(model, ce, uneven(x, y), memory_budget=0, progress=False)
    assert not E2.info["activations_cached"] and E.info["activations_cached"]
    assert relative_error(E2.dense(), E.dense()) <= EXACT
    c = 0.03
    Er = hessext.ekfac(model, ce, (x, y), regularizer=L2(c), progress=False)
    assert relative_error(Er.dense(), E.dense() + c * torch.eye(E.num_params, dtype=torch.float64)) <= EXACT
    with pytest.raises(ValueError, match="regularizer must be hessext.regularizers.L2"):
        hessext.kfac(model, ce, (x, y), regularizer=Penalty(lambda t: t.pow(4).sum()), progress=False)


def test_mc_fisher_estimates_the_exact_ggn_factors():
    model = _mlp()
    x, y = _data()
    exact = hessext.kfac(model, ce, (x, y), fisher="exact-ggn", progress=False)
    mc = hessext.kfac(model, ce, (x, y), fisher="mc", mc_samples=400, seed=3, progress=False)
    again = hessext.kfac(model, ce, (x, y), fisher="mc", mc_samples=400, seed=3, progress=False)
    assert torch.equal(mc.dense(), again.dense())  # seeded
    # S from n·R = 9,600 draws of a 3×3 covariance: relative error ~ sqrt(C / nR) ≈ 0.02
    for be, bm in zip(exact.blocks, mc.blocks):
        S_exact = (be.qs * be.factor_eigenvalues[1]) @ be.qs.T
        S_mc = (bm.qs * bm.factor_eigenvalues[1]) @ bm.qs.T
        assert relative_error(S_mc, S_exact) <= 0.1


def test_params_subset_last_layer_and_its_exact_hessian():
    model = _mlp()
    x, y = _data()
    names = hessext.last_layer(model)
    assert names == ["2.weight", "2.bias"]
    E = hessext.ekfac(model, ce, (x, y), params=names, fisher="exact-ggn", progress=False)
    assert E.num_params == 5 * 3 + 3
    # the subset's exact dense Hessian stays available, and matches the full one's block
    H_last = hessext.hessian(model, ce, (x, y), params=names, progress=False)
    H_full = reference_hessian(model, ce, (x, y))
    assert relative_error(H_last.dense(), H_full[-18:, -18:]) <= 1e-10
    # the last layer's GGN block equals its Hessian block (f is linear in the last layer), and
    # EK-FAC's eigenvalues are its diagonal in the eigenbasis
    G = reference_ggn(model, "ce", (x, y))[-18:, -18:]
    b = E.blocks[0]
    Q = b.eigenvectors(torch.arange(b.size))
    pos = b.index - b.index.min()
    assert relative_error(b.eigenvalues(), torch.diagonal(Q.T @ G[pos][:, pos] @ Q), "max") <= EXACT
    weight_only = hessext.kfac(model, ce, (x, y), params=["2.weight"], progress=False)
    assert weight_only.num_params == 15 and weight_only.blocks[0].Ia == 5


def test_bad_input_names_the_argument_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = _data()
    state = model_state(model)
    with pytest.raises(ValueError, match=r"params: '1\.weight' is not the weight or bias of a Linear"):
        hessext.kfac(model, ce, (x, y), progress=False)
    assert_same_state(model, state)
    ok = hessext.kfac(model, ce, (x, y), params=["0.weight", "0.bias", "3.weight", "3.bias"], progress=False)
    assert len(ok.blocks) == 2
    assert_same_state(model, state)
    grouped = nn.Sequential(nn.Conv1d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(8, 3)).double()
    with pytest.raises(ValueError, match="grouped convolution"):
        hessext.kfac(
            grouped, ce, (torch.randn(5, 2, 4, dtype=torch.float64), torch.zeros(5, dtype=torch.long))
        )
    with pytest.raises(ValueError, match="fisher must be one of"):
        hessext.kfac(model, ce, (x, y), fisher="true")
    with pytest.raises(ValueError, match="mc_samples must be a positive integer"):
        hessext.ekfac(model, ce, (x, y), fisher="mc", mc_samples=0)
    # a curvature of another model (other parameter values) is refused by the methods
    other = _mlp(seed=1)
    K = hessext.ekfac(_mlp(seed=0), ce, (x, y), progress=False)
    with pytest.raises(ValueError, match="other parameter values"):
        hessext.influence(other, ce, (x, y), (x[:2], y[:2]), hessian=K, damping=0.1)
    small = nn.Sequential(nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match="over .* parameters"):
        hessext.influence(small, ce, (x, y), (x[:2], y[:2]), hessian=K, damping=0.1)


WORKER = """
import torch, torch.distributed as dist, hessext
from hessext.testing import ce, init_gloo, leave_gloo, CNN2d
rank, world = init_gloo()
torch.manual_seed(0)
model = CNN2d().double()
g = torch.Generator().manual_seed(3)
x = torch.randn(11, 1, 6, 6, generator=g, dtype=torch.float64); y = torch.randint(0, 3, (11,), generator=g)
data = [(x[:4], y[:4]), (x[4:5], y[4:5]), (x[5:], y[5:])]
E = hessext.ekfac(model, ce, data, progress=False)
test = (x[:3], y[:3])
S = hessext.influence(model, ce, (x, y), test, hessian=E, damping=0.01, batch_size=4, progress=False)
if rank == 0:
    torch.save({"D": E.dense(), "S": S.clone(), "world": E.info["world_size"], "n": E.info["n"]}, OUT)
dist.barrier()
leave_gloo()
"""


def test_two_process_gloo_equals_single_process():
    torch.manual_seed(0)
    model = CNN2d().double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(11, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (11,), generator=g)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "E.pt")
        run_distributed(WORKER.replace("OUT", repr(out)), world=2)
        got = torch.load(out)
    assert got["world"] == 2 and got["n"] == 11
    E = hessext.ekfac(model, ce, (x, y), progress=False)
    S = hessext.influence(model, ce, (x, y), (x[:3], y[:3]), hessian=E, damping=0.01, progress=False)
    assert relative_error(got["D"], E.dense()) <= EXACT
    assert relative_error(got["S"], S) <= 1e-10
