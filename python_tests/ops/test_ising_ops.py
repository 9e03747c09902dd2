"""The 2-D Ising sweeps (hessext::ising_sweeps): compiled kernel against the pure-torch reference
bit for bit, independence of the thread count, continuation, exact Boltzmann averages of small
lattices (enumerated), opcheck, fallback parity, bad inputs."""

import math

import numpy as np
import pytest
import torch

from hessext import _extension, ops
from hessext.ops import _reference as ref
from hessext.testing import run_python

needs_kernel = pytest.mark.skipif(
    not _extension.has_kernel("ising_sweeps", "cpu"),
    reason="compiled core not built (HESSEXT_DISABLE_EXT or no build)",
)


def _random_spins(B, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (B, L, L), generator=g) * 2 - 1).to(torch.int8)


@needs_kernel
@pytest.mark.parametrize("L", [2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("algorithm", ["metropolis", "wolff"])
def test_kernel_matches_reference_bitwise(L, algorithm):
    s = _random_spins(4, L, seed=L)
    beta = torch.tensor([0.1, 0.3, 0.4407, 0.8], dtype=torch.float64)
    thr = ref.ising_thresholds(beta)
    args = (s, thr, 3, 2**40 + 5, 7, algorithm == "wolff", 2, True)
    got, got_series = torch.ops.hessext.ising_sweeps(*args)
    want, want_series = ref.ising_sweeps(*args)
    assert torch.equal(got, want)
    assert torch.equal(got_series, want_series)
    assert not torch.equal(got, s)  # something happened
    assert torch.equal(s, _random_spins(4, L, seed=L))  # input untouched


def test_observables_are_the_configurations_m_and_e():
    s = _random_spins(3, 6)
    new, m, e = ops.ising_sweeps(s, 0.3, 1, seed=1, observables=True)
    f = new.double()
    assert torch.equal(m[:, 0], f.mean(dim=(1, 2)))
    assert torch.allclose(e[:, 0], -(f * (f.roll(-1, 1) + f.roll(-1, 2))).mean(dim=(1, 2)), atol=0, rtol=0)


@needs_kernel
@pytest.mark.parametrize("algorithm", ["metropolis", "wolff"])
def test_thread_count_does_not_change_the_chains(algorithm):
    s = _random_spins(37, 16, seed=3)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(ops.ising_sweeps(s, 0.44, 20, seed=9, algorithm=algorithm, clusters_per_sweep=3))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(o, outs[0]) for o in outs[1:])


@pytest.mark.parametrize("algorithm", ["metropolis", "wolff"])
def test_sweep_offset_continues_a_chain(algorithm):
    s = _random_spins(3, 6, seed=4)
    once = ops.ising_sweeps(s, 0.4, 5, seed=2, algorithm=algorithm)
    part = ops.ising_sweeps(s, 0.4, 2, seed=2, algorithm=algorithm)
    twice = ops.ising_sweeps(part, 0.4, 3, seed=2, algorithm=algorithm, sweep_offset=2)
    assert torch.equal(once, twice)
    assert not torch.equal(once, ops.ising_sweeps(s, 0.4, 5, seed=3, algorithm=algorithm))


def _exact_moments(L: int, beta: float) -> dict:
    """Boltzmann averages of the periodic L×L lattice by enumeration of all 2^(L²) states."""
    N = L * L
    idx = torch.arange(2**N)
    s = (((idx.view(-1, 1) >> torch.arange(N)) & 1) * 2 - 1).double().view(-1, L, L)
    e = -(s * (s.roll(-1, 1) + s.roll(-1, 2))).sum(dim=(1, 2))
    m = s.mean(dim=(1, 2))
    w = torch.exp(-beta * (e - e.min()))
    w = w / w.sum()
    return {"abs_m": float((w * m.abs()).sum()), "e": float((w * e / N).sum()), "m2": float((w * m**2).sum())}


@pytest.mark.parametrize("L", [3, 4])
@pytest.mark.parametrize("algorithm", ["metropolis", "wolff"])
def test_chains_sample_the_boltzmann_distribution(L, algorithm):
    """Time averages over many independent chains against exact enumeration at T = 2.27 (near
    T_c, where a biased update shows most). Each chain's average is one independent sample, so
    the tolerance is 5 standard errors of the mean over chains (a false alarm ~ 6e-7 per check)."""
    beta = 1 / 2.27
    exact = _exact_moments(L, beta)
    B = 2000
    start = torch.ones(B, L, L, dtype=torch.int8)
    s = ops.ising_sweeps(start, beta, 50, seed=11, algorithm=algorithm, clusters_per_sweep=2)
    _, m, e = ops.ising_sweeps(
        s, beta, 200, seed=11, algorithm=algorithm, clusters_per_sweep=2, sweep_offset=50, observables=True
    )
    for name, per_chain in (("abs_m", m.abs().mean(1)), ("e", e.mean(1)), ("m2", (m * m).mean(1))):
        se = float(per_chain.std()) / math.sqrt(B)
        assert abs(float(per_chain.mean()) - exact[name]) < 5 * se, (
            name,
            float(per_chain.mean()),
            exact[name],
            se,
        )


def test_stopping_a_wolff_sweep_at_a_fixed_cluster_count_is_unbiased_where_a_size_rule_is_not():
    """Why a Wolff sweep is a fixed number of clusters: sampling after "L² spins flipped" would
    oversample the states that follow large clusters. The L = 4 chains above agree with the
    enumeration; a size-stopped sampler (simulated here from single-cluster sweeps) does not."""
    L, beta = 4, 1 / 2.27
    exact = _exact_moments(L, beta)
    B = 1000
    s = ops.ising_sweeps(torch.ones(B, L, L, dtype=torch.int8), beta, 50, seed=5, algorithm="wolff")
    _, m, _ = ops.ising_sweeps(s, beta, 400, seed=5, algorithm="wolff", sweep_offset=50, observables=True)
    # cluster sizes from successive magnetisations: |ΔM| = 2 |C|
    sizes = (m.diff(dim=1).abs() * L * L / 2).round()
    kept = []
    for b in range(B):
        total = 0
        for t in range(sizes.shape[1]):
            total += int(sizes[b, t])
            if total >= L * L:
                kept.append(float(m[b, t + 1].abs()))
                total = 0
    biased = float(np.mean(kept))
    assert biased - exact["abs_m"] > 0.02  # the size rule's bias, far beyond its noise (~0.003)


def test_opcheck():
    if not _extension.loaded:
        pytest.skip("compiled core not loaded")
    s = _random_spins(3, 5)
    thr = ref.ising_thresholds(torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64))
    for wolff in (False, True):
        torch.library.opcheck(torch.ops.hessext.ising_sweeps, (s, thr, 2, 3, 0, wolff, 1, True))


@needs_kernel
def test_fallback_gives_the_same_chains():
    code = (
        "import torch, hessext\n"
        "g = torch.Generator().manual_seed(0)\n"
        "s = (torch.randint(0, 2, (4, 6, 6), generator=g) * 2 - 1).to(torch.int8)\n"
        "for alg in ('metropolis', 'wolff'):\n"
        "    out = hessext.ising_sweeps(s, torch.tensor([0.2, 0.4, 0.5, 0.9]), 4, seed=3, algorithm=alg)\n"
        "    print(alg, out.flatten().tolist())\n"
    )
    assert run_python(code, disable_ext=True) == run_python(code, disable_ext=False)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(spins=torch.ones(2, 4, 4)), TypeError, "int8"),
        (dict(spins=torch.ones(2, 1, 1, dtype=torch.int8)), ValueError, "L >= 2"),
        (dict(spins=torch.ones(2, 4, 5, dtype=torch.int8)), ValueError, r"\[B, L, L\]"),
        (dict(spins=torch.zeros(2, 4, 4, dtype=torch.int8)), ValueError, r"\+1 and -1"),
        (dict(beta=-1.0), ValueError, "beta"),
        (dict(beta=float("inf")), ValueError, "beta"),
        (dict(beta=torch.ones(3)), ValueError, r"\[B\] = \[2\]"),
        (dict(n_sweeps=-1), ValueError, "n_sweeps"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(algorithm="heatbath"), ValueError, "algorithm"),
        (dict(clusters_per_sweep=0), ValueError, "clusters_per_sweep"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs, error, match):
    args = dict(spins=torch.ones(2, 4, 4, dtype=torch.int8), beta=0.5, n_sweeps=1, seed=0)
    args.update(kwargs)
    spins, beta, n = args.pop("spins"), args.pop("beta"), args.pop("n_sweeps")
    with pytest.raises(error, match=match):
        ops.ising_sweeps(spins, beta, n, **args)
