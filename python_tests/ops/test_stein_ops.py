"""The Stein sampler ops (hessext::stein_perturb, hessext::stein_accumulate): Philox known
answers, compiled kernel against the pure-torch reference (bit-exact directions), opcheck,
independence of thread count and chunking, bad inputs."""

import pytest
import torch

from hessext import _extension, ops
from hessext.ops import _reference as ref

needs_kernel = pytest.mark.skipif(
    not _extension.has_kernel("stein_perturb", "cpu"),
    reason="compiled core not built (HESSEXT_DISABLE_EXT or no build)",
)


def _words(*vals):
    return [torch.tensor([v], dtype=torch.int64) for v in vals]


@pytest.mark.parametrize(
    "ctr,key,expected",
    [
        # Random123's kat_vectors for philox4x32_10
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox_known_answers(ctr, key, expected):
    out = ref.philox4x32_10(*_words(*ctr), *key)
    assert [int(o) for o in out] == list(expected)


def test_normals_are_standard_normal():
    z = ref.stein_normals(3, torch.arange(2), torch.arange(20000), 50).double().reshape(-1)
    n = z.numel()  # 2e6 draws: mean/var/kurtosis within 5 standard errors
    assert abs(z.mean()) < 5 / n**0.5
    assert abs(z.var() - 1) < 5 * (2 / n) ** 0.5
    assert abs((z**4).mean() - 3) < 5 * (96 / n) ** 0.5
    assert z.abs().max() < 5.8  # uniforms >= 2^-24


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,D,P", [(1, 1, 1), (3, 13, 11), (2, 784, 5)])
@pytest.mark.parametrize("antithetic", [True, False])
def test_perturb_kernel_matches_reference_bitwise(dtype, B, D, P, antithetic):
    x = torch.randn(D, B, dtype=dtype).t()  # non-contiguous
    args = (0.37, 2**40 + 11, 5, 2**33 + 7, P, antithetic)
    got = torch.ops.hessext.stein_perturb(x, *args)
    want = ref.stein_perturb(x, *args)
    assert got.shape == (B, 2 if antithetic else 1, P, D)
    assert torch.equal(got, want)


def _accumulate(fn, h, M, D, tile, splits=None, point_offset=0):
    B, A, P, K = h.shape
    hess = torch.zeros(B, M, D, K, dtype=torch.float64)
    grad = torch.zeros(B, M, K, dtype=torch.float64)
    edges = splits or [0, P]
    for j0, j1 in zip(edges[:-1], edges[1:]):
        fn(h[:, :, j0:j1], hess, grad, 7, point_offset, j0, tile)
    return hess, grad


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("A", [1, 2])
def test_accumulate_kernel_matches_reference(dtype, A):
    B, P, K, D, M, tile = 2, 37, 5, 9, 3, 8
    h = torch.randn(B, A, P, K + 1, dtype=dtype)[..., :K]  # non-contiguous
    got_h, got_g = _accumulate(torch.ops.hessext.stein_accumulate, h, M, D, tile, point_offset=3)
    want_h, want_g = _accumulate(ref.stein_accumulate, h, M, D, tile, point_offset=3)
    # float64 oracle and the float32 error bound of a k-term product, k <= tile
    z = ref.stein_normals(7, torch.arange(3, 3 + B), torch.arange(P), D).double()
    d = (h[:, 0] - h[:, 1] if A == 2 else h[:, 0]).double()
    exact_abs = torch.zeros(B, M, D, K, dtype=torch.float64)
    for t in range((P + tile - 1) // tile):
        sl = slice(t * tile, (t + 1) * tile)
        exact_abs[:, t % M] += z[:, sl].abs().transpose(1, 2) @ d[:, sl].abs()
    u = torch.finfo(dtype).eps
    bound = 2 * (tile + 2) * u * exact_abs + 1e-300
    assert ((got_h - want_h).abs() <= bound).all()
    assert torch.allclose(got_g, want_g, rtol=1e-12, atol=1e-12)


@needs_kernel
def test_accumulate_independent_of_chunking_and_threads():
    B, A, P, K, D, M, tile = 3, 2, 160, 40, 50, 4, 16
    h = torch.randn(B, A, P, K)
    fn = torch.ops.hessext.stein_accumulate
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _accumulate(fn, h, M, D, tile)
        torch.set_num_threads(2)
        two = _accumulate(fn, h, M, D, tile)
        chunked = _accumulate(fn, h, M, D, tile, splits=[0, 16, 64, 112, 160])
    finally:
        torch.set_num_threads(threads)
    for a, b in [(one, two), (one, chunked)]:
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@needs_kernel
def test_opcheck():
    x = torch.randn(2, 7, dtype=torch.float64)
    torch.library.opcheck(torch.ops.hessext.stein_perturb, (x, 0.5, 1, 0, 0, 3, True))
    h = torch.randn(2, 2, 5, 4, dtype=torch.float64)
    acc_h = torch.zeros(2, 3, 7, 4, dtype=torch.float64)
    acc_g = torch.zeros(2, 3, 4, dtype=torch.float64)
    torch.library.opcheck(torch.ops.hessext.stein_accumulate, (h, acc_h, acc_g, 1, 0, 4, 2))


@needs_kernel
def test_bad_inputs_are_named():
    x = torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="sigma"):
        torch.ops.hessext.stein_perturb(x, 0.0, 0, 0, 0, 2, True)
    with pytest.raises(RuntimeError, match=r"\[B, D\]"):
        torch.ops.hessext.stein_perturb(x[0], 1.0, 0, 0, 0, 2, True)
    h = torch.randn(1, 2, 4, 3)
    acc_h = torch.zeros(1, 2, 5, 3, dtype=torch.float64)
    acc_g = torch.zeros(1, 2, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="multiple of tile_pairs"):
        torch.ops.hessext.stein_accumulate(h, acc_h, acc_g, 0, 0, 3, 2)
    with pytest.raises(RuntimeError, match="float64"):
        torch.ops.hessext.stein_accumulate(h, acc_h.float(), acc_g, 0, 0, 0, 2)


def test_ops_dispatch_gives_reference_results():
    x = torch.randn(2, 6, dtype=torch.float64)
    assert torch.equal(
        ops.stein_perturb(x, 0.2, 5, 1, 0, 4, True), ref.stein_perturb(x, 0.2, 5, 1, 0, 4, True)
    )


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_accumulate_given_directions_same_bits(dtype):
    # stein_perturb of zeros with sigma = 1 is exactly z; reading it back must give what
    # regenerating gives, for any chunking of the pairs
    B, A, P, K, D, M, tile = 2, 2, 40, 6, 11, 3, 8
    h = torch.randn(B, A, P, K, dtype=dtype)
    z = torch.ops.hessext.stein_perturb(torch.zeros(B, D, dtype=dtype), 1.0, 7, 0, 0, P, False)[:, 0]
    assert torch.equal(z, ref.stein_normals(7, torch.arange(B), torch.arange(P), D).to(dtype))
    fn = torch.ops.hessext.stein_accumulate
    regen = _accumulate(fn, h, M, D, tile)
    for splits in ([0, P], [0, 16, 40]):
        hess = torch.zeros(B, M, D, K, dtype=torch.float64)
        grad = torch.zeros(B, M, K, dtype=torch.float64)
        for j0, j1 in zip(splits[:-1], splits[1:]):
            fn(h[:, :, j0:j1], hess, grad, 7, 0, j0, tile, z[:, j0:j1])
        assert torch.equal(hess, regen[0]) and torch.equal(grad, regen[1])
    # and the reference takes the same argument
    hess = torch.zeros(B, M, D, K, dtype=torch.float64)
    grad = torch.zeros(B, M, K, dtype=torch.float64)
    ref.stein_accumulate(h, hess, grad, 7, 0, 0, tile, z)
    want = _accumulate(ref.stein_accumulate, h, M, D, tile)
    assert torch.equal(hess, want[0]) and torch.equal(grad, want[1])
    with pytest.raises(RuntimeError, match=r"z must be \[B, P, D\]"):
        fn(h, hess, grad, 7, 0, 0, tile, z[:, :5])
    with pytest.raises(RuntimeError, match="z must have h's dtype"):
        fn(h, hess, grad, 7, 0, 0, tile, z.to(torch.float64 if dtype == torch.float32 else torch.float32))


@needs_kernel
def test_opcheck_with_directions():
    h = torch.randn(2, 2, 5, 4, dtype=torch.float64)
    acc_h = torch.zeros(2, 3, 7, 4, dtype=torch.float64)
    acc_g = torch.zeros(2, 3, 4, dtype=torch.float64)
    z = torch.randn(2, 5, 7, dtype=torch.float64)
    torch.library.opcheck(torch.ops.hessext.stein_accumulate, (h, acc_h, acc_g, 1, 0, 4, 2, z))


@needs_kernel
def test_torch_compile_smoke():
    # the ops inside a compiled function (fake tensors, functionalization of the in-place
    # accumulators, no graph break) give the eager results
    def estimate(x, h):
        xp = torch.ops.hessext.stein_perturb(x, 0.3, 5, 0, 0, 6, True)
        hess = torch.zeros(x.shape[0], 2, x.shape[1], h.shape[-1], dtype=torch.float64)
        grad = torch.zeros(x.shape[0], 2, h.shape[-1], dtype=torch.float64)
        torch.ops.hessext.stein_accumulate(h * 1.0, hess, grad, 5, 0, 0, 2)
        return xp.sum(), hess, grad

    x = torch.randn(2, 7, dtype=torch.float64)
    h = torch.randn(2, 2, 6, 3, dtype=torch.float64)
    torch._dynamo.reset()
    compiled = torch.compile(estimate, backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(x, h), estimate(x, h)):
        assert torch.equal(got, want)
