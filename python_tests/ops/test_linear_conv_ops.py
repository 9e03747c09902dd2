"""The per-sample gradient ops (conv_weight_grad, bias_grad, linear_weight_grad, the Linear
ghost contractions): compiled CPU kernels against the pure-torch references and against
independent truths (torch.func, explicit loops), in float32 and float64, batch size 1, odd
sizes, non-contiguous inputs; torch.library.opcheck on every op; a torch.compile smoke test."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from hessext import _extension, ops
from hessext.ops import _reference
from hessext.testing import UNIT_ROUNDOFF_FP32

needs_ext = pytest.mark.skipif(not _extension.loaded, reason="compiled core not loaded")
DTYPES = [torch.float32, torch.float64]
OPS = [
    "linear_weight_grad",
    "conv_weight_grad",
    "bias_grad",
    "linear_ghost_matvec",
    "linear_ghost_rmatvec",
    "linear_ghost_sqnorms",
    "linear_ghost_gram",
]


def tol(dtype, k):
    """Elementwise bound relative to the sum of |terms|: K·u for a length-K reduction in
    float32, and 1e-10 in float64 (its K·u is ~1e-13 for these sizes)."""
    return max(k, 1) * UNIT_ROUNDOFF_FP32 * 4 if dtype == torch.float32 else 1e-10


def close(got, want, scale, dtype, k):
    err = float(((got - want).abs() / scale.clamp_min(1e-30)).max()) if got.numel() else 0.0
    assert err <= tol(dtype, k), f"error {err:.3g} > {tol(dtype, k):.3g}"


def noncontig(t):
    """The same values in a non-contiguous layout (every other element of a wider tensor)."""
    wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


# ---- conv_weight_grad ------------------------------------------------------------------------

CONV_CASES = [
    # N, C, O, (H, W), (kH, kW), stride, padding, dilation, groups
    (1, 1, 1, (1, 9), (1, 3), (1, 1), (0, 0), (1, 1), 1),
    (3, 2, 4, (5, 7), (3, 2), (1, 2), (1, 0), (1, 1), 1),
    (2, 6, 9, (8, 6), (2, 3), (2, 1), (0, 2), (2, 1), 3),
    (4, 4, 4, (1, 17), (1, 5), (1, 3), (0, 4), (1, 2), 4),
    (5, 3, 5, (6, 6), (1, 1), (1, 1), (0, 0), (1, 1), 1),
    # large enough per sample (> 2^14 multiply-adds) for the CPU kernel's GEMM path
    (2, 8, 16, (12, 13), (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 6, 36, (9, 11), (3, 2), (1, 2), (0, 1), (2, 1), 2),
    # stride 1, no padding, more patch rows than output channels: the CPU kernel's contiguous
    # patch runs over W-wide positions (dilated, grouped, and the benchmark CNN's second layer)
    (3, 4, 5, (7, 9), (3, 2), (1, 1), (0, 0), (2, 3), 1),
    (2, 6, 4, (8, 10), (3, 3), (1, 1), (0, 0), (1, 1), 2),
    (3, 16, 32, (13, 13), (3, 3), (1, 1), (0, 0), (1, 1), 1),
]


def conv_truth(x, d, wshape, stride, padding, dilation, groups):
    """torch.func: per-sample gradient of Σ d·conv2d(x, W) w.r.t. W, in float64."""
    w0 = torch.zeros(wshape, dtype=torch.float64)

    def f(w, xi, di):
        y = F.conv2d(xi.unsqueeze(0), w, None, stride, padding, dilation, groups)
        return (y * di.unsqueeze(0)).sum()

    return torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0))(w0, x.double(), d.double())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("layout", ["contiguous", "noncontiguous"])
def test_conv_weight_grad(case, dtype, layout):
    torch.manual_seed(0)
    N, C, O, (H, W), (kH, kW), stride, padding, dilation, groups = case
    x = torch.randn(N, C, H, W, dtype=dtype)
    Ho = (H + 2 * padding[0] - dilation[0] * (kH - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kW - 1) - 1) // stride[1] + 1
    d = torch.randn(N, O, Ho, Wo, dtype=dtype)
    if layout == "noncontiguous":
        x, d = noncontig(x), noncontig(d)
    wshape = (O, C // groups, kH, kW)
    # out as a column block of a wider [N, P] matrix: the sample stride is not the block size
    big = torch.full((N, 3 + O * (C // groups) * kH * kW + 2), 7.0, dtype=dtype)
    block = big[:, 3:-2].view(N, *wshape)
    ops.conv_weight_grad(x, d, block, stride, padding, dilation, groups)
    want = conv_truth(x, d, wshape, stride, padding, dilation, groups)
    scale = conv_truth(x.abs(), d.abs(), wshape, stride, padding, dilation, groups)
    close(block.double(), want, scale, dtype, Ho * Wo)
    assert (big[:, :3] == 7).all() and (big[:, -2:] == 7).all()  # nothing outside the block
    ref = torch.empty_like(block)
    _reference.conv_weight_grad(x, d, ref, stride, padding, dilation, groups)
    close(ref.double(), want, scale, dtype, Ho * Wo)


@needs_ext
def test_conv_weight_grad_errors():
    x, d = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 3, 3)
    out = torch.empty(2, 4, 3, 3, 3)
    with pytest.raises(RuntimeError, match="conv_weight_grad: d must be"):
        torch.ops.hessext.conv_weight_grad(x, d[:, :, :2], out, [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="conv_weight_grad: groups"):
        torch.ops.hessext.conv_weight_grad(x, d, out, [1, 1], [0, 0], [1, 1], 2)
    with pytest.raises(RuntimeError, match="conv_weight_grad: dtype"):
        torch.ops.hessext.conv_weight_grad(x.half(), d.half(), out.half(), [1, 1], [0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="contiguous per-sample blocks"):
        torch.ops.hessext.conv_weight_grad(x, d, out.transpose(3, 4), [1, 1], [0, 0], [1, 1], 1)


# ---- bias_grad and linear_weight_grad ---------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,T,O", [(1, 1, 1), (3, 7, 5), (6, 1, 4)])
@pytest.mark.parametrize("layout", ["ntc", "nct"])
def test_bias_grad(N, T, O, dtype, layout):
    torch.manual_seed(1)
    d = (
        torch.randn(N, T, O, dtype=dtype)
        if layout == "ntc"
        else torch.randn(N, O, T, dtype=dtype).transpose(1, 2)
    )
    big = torch.zeros(N, O + 3, dtype=dtype)
    ops.bias_grad(d, big[:, 1 : 1 + O])
    want = d.double().sum(1)
    close(big[:, 1 : 1 + O].double(), want, d.double().abs().sum(1), dtype, T)
    assert (big[:, 0] == 0).all() and (big[:, -2:] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,T,I,O", [(1, 1, 1, 1), (5, 1, 7, 3), (4, 6, 5, 9)])
def test_linear_weight_grad(N, T, I, O, dtype):
    torch.manual_seed(2)
    a, d = noncontig(torch.randn(N, T, I, dtype=dtype)), torch.randn(N, T, O, dtype=dtype)
    big = torch.zeros(N, O * I + 1, dtype=dtype)
    block = big[:, 1:].view(N, O, I)
    ops.linear_weight_grad(a, d, block)
    want = torch.einsum("nto,nti->noi", d.double(), a.double())
    scale = torch.einsum("nto,nti->noi", d.double().abs(), a.double().abs())
    close(block.double(), want, scale, dtype, T)


# ---- Linear ghost contractions ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,I,O,M", [(1, 1, 1, 1), (7, 5, 3, 4), (9, 13, 6, 1), (5, 3, 8, 2)])
def test_linear_ghost(N, I, O, M, dtype):
    torch.manual_seed(3)
    a, d = noncontig(torch.randn(N, I, dtype=dtype)), torch.randn(N, O, dtype=dtype)
    v, u = torch.randn(O * I, M, dtype=dtype), noncontig(torch.randn(N, M, dtype=dtype))
    # the truth: the materialised per-sample gradients in float64
    G = torch.einsum("no,ni->noi", d.double(), a.double()).reshape(N, -1)
    Ga = G.abs()
    close(ops.linear_ghost_matvec(a, d, v).double(), G @ v.double(), Ga @ v.double().abs(), dtype, O * I)
    close(ops.linear_ghost_rmatvec(a, d, u).double(), G.T @ u.double(), Ga.T @ u.double().abs(), dtype, N)
    close(ops.linear_ghost_sqnorms(a, d).double(), G.square().sum(1), G.square().sum(1), dtype, I + O)
    close(ops.linear_ghost_gram(a, d).double(), G @ G.T, Ga @ Ga.T, dtype, I + O)
    for name, args in [
        ("linear_ghost_matvec", (a, d, v)),
        ("linear_ghost_rmatvec", (a, d, u)),
        ("linear_ghost_sqnorms", (a, d)),
        ("linear_ghost_gram", (a, d)),
    ]:
        ref = getattr(_reference, name)(*args)
        got = getattr(ops, name)(*args)
        assert got.shape == ref.shape


@needs_ext
def test_linear_ghost_errors():
    a, d = torch.randn(3, 4), torch.randn(3, 2)
    with pytest.raises(RuntimeError, match="linear_ghost_matvec: v must be"):
        torch.ops.hessext.linear_ghost_matvec(a, d, torch.randn(7, 2))
    with pytest.raises(RuntimeError, match="linear_ghost_rmatvec: u must be"):
        torch.ops.hessext.linear_ghost_rmatvec(a, d, torch.randn(4, 2))
    with pytest.raises(RuntimeError, match="linear_ghost_gram: a .* disagree in N"):
        torch.ops.hessext.linear_ghost_gram(a, d[:2])
    with pytest.raises(RuntimeError, match="linear_ghost_sqnorms: dtypes differ"):
        torch.ops.hessext.linear_ghost_sqnorms(a, d.double())


# ---- the compiled kernel is what runs, opcheck, torch.compile ---------------------------------


@needs_ext
@pytest.mark.parametrize("op", OPS)
def test_cpu_kernel_registered(op):
    assert _extension.has_kernel(op, "cpu")
    assert ops.uses_kernel(op, torch.zeros(1), torch.zeros(1))


def _opcheck_samples(dtype):
    torch.manual_seed(4)
    x, d = torch.randn(2, 4, 5, 6, dtype=dtype), torch.randn(2, 6, 3, 5, dtype=dtype)
    a2, d2 = torch.randn(3, 5, dtype=dtype), torch.randn(3, 4, dtype=dtype)
    return {
        "conv_weight_grad": (x, d, torch.empty(2, 6, 2, 3, 2, dtype=dtype), [2, 1], [1, 0], [1, 1], 2),
        "bias_grad": (torch.randn(3, 4, 5, dtype=dtype), torch.empty(3, 5, dtype=dtype)),
        "linear_weight_grad": (
            torch.randn(2, 3, 4, dtype=dtype),
            torch.randn(2, 3, 5, dtype=dtype),
            torch.empty(2, 5, 4, dtype=dtype),
        ),
        "linear_ghost_matvec": (a2, d2, torch.randn(20, 3, dtype=dtype)),
        "linear_ghost_rmatvec": (a2, d2, torch.randn(3, 2, dtype=dtype)),
        "linear_ghost_sqnorms": (a2, d2),
        "linear_ghost_gram": (a2, d2),
    }


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, dtype):
    torch.library.opcheck(getattr(torch.ops.hessext, op), _opcheck_samples(dtype)[op])


@needs_ext
def test_torch_compile_smoke():
    # The registered ops themselves (the Python dispatcher's has_kernel query is a graph break).
    hx = torch.ops.hessext

    def ghost_products(a, d, v, x, dc, out):
        hx.conv_weight_grad(x, dc, out, [1, 1], [1, 1], [1, 1], 1)
        bias = torch.empty(4, 3)
        hx.bias_grad(dc.flatten(2).transpose(1, 2), bias)
        return (
            hx.linear_ghost_matvec(a, d, v),
            hx.linear_ghost_gram(a, d),
            hx.linear_ghost_rmatvec(a, d, v[:4]),
            hx.linear_ghost_sqnorms(a, d),
            out * 2,
            bias,
        )

    compiled = torch.compile(ghost_products, backend="aot_eager", fullgraph=True)
    torch.manual_seed(5)
    a, d, v = torch.randn(4, 3), torch.randn(4, 2), torch.randn(6, 5)
    x, dc = torch.randn(4, 2, 5, 5), torch.randn(4, 3, 5, 5)
    got = compiled(a, d, v, x, dc, torch.empty(4, 3, 2, 3, 3))
    want = ghost_products(a, d, v, x, dc, torch.empty(4, 3, 2, 3, 3))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
