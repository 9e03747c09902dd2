"""Pure-torch references of every hessext op.

This is product code: the fallback when the compiled core is absent or has no kernel for a
device/dtype, the oracle of every kernel test, and the baseline of every benchmark. Keep each
function short and obviously correct; the signatures match the compiled ops exactly.
"""

from __future__ import annotations

import math

import torch


def linear_weight_grad(a: torch.Tensor, d: torch.Tensor, out: torch.Tensor) -> None:
    """out[n, o, i] = sum_t d[n, t, o] a[n, t, i]; a [N, T, I], d [N, T, O], out [N, O, I]."""
    out.copy_(torch.einsum("nto,nti->noi", d, a))


# ---- Stein (SmoothHess) sampler: a vectorised Philox4x32-10 and Box-Muller that give the same
# bits as csrc/kernels/philox.h (integer Philox exactly; the float32 normals with the same
# sequence of singly-rounded operations).


_MASK32 = 0xFFFFFFFF
_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def _mulhilo32(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of a * m for int64 tensors a < 2^32 and m < 2^32, without
    int64 overflow: m is split in 16-bit halves."""
    t0 = a * (m & 0xFFFF)
    t1 = a * (m >> 16)
    mid = t0 + ((t1 & 0xFFFF) << 16)
    return (t1 >> 16) + (mid >> 32), mid & _MASK32


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on int64 tensors holding 32-bit words (broadcast), key (k0, k1)."""
    for _ in range(10):
        hi0, lo0 = _mulhilo32(c0, _PHILOX_M0)
        hi1, lo1 = _mulhilo32(c2, _PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _PHILOX_W0) & _MASK32, (k1 + _PHILOX_W1) & _MASK32
    return c0, c1, c2, c3


def _f32(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float32)


_TWO_M23 = 1.1920928955078125e-07  # 2^-23, exact


def _log_uniform(word: torch.Tensor) -> torch.Tensor:
    u = ((word >> 9).to(torch.float32) + 0.5) * _TWO_M23
    bits = u.view(torch.int32).to(torch.int64)
    e = ((bits >> 23) & 0xFF) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).to(torch.int32).view(torch.float32)
    big = m > _f32(1.41421353816986083984375)
    m = torch.where(big, m * 0.5, m)
    e = (e + big.to(torch.int64)).to(torch.float32)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = _f32(0.111111111111111111) * s2 + _f32(0.142857142857142857)
    p = p * s2 + _f32(0.2)
    p = p * s2 + _f32(0.333333333333333333)
    p = p * s2 + 1.0
    log_m = (s + s) * p
    return e * _f32(0.693145751953125) + (e * _f32(1.428606765330187e-06) + log_m)


def _cos_sin_uniform(word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = word >> 30
    f = (((word >> 7) & 0x7FFFFF).to(torch.float32) + 0.5) * _TWO_M23
    phi = (f - 0.5) * _f32(1.57079632679489661923)
    phi2 = phi * phi
    ps = _f32(2.75573192239858906526e-06) * phi2 + _f32(-1.98412698412698412698e-04)
    ps = ps * phi2 + _f32(8.33333333333333333333e-03)
    ps = ps * phi2 + _f32(-0.166666666666666666667)
    s = phi + (phi * phi2) * ps
    pc = _f32(-2.75573192239858906526e-07) * phi2 + _f32(2.48015873015873015873e-05)
    pc = pc * phi2 + _f32(-1.38888888888888888889e-03)
    pc = pc * phi2 + _f32(4.16666666666666666667e-02)
    pc = pc * phi2 + -0.5
    c = 1.0 + phi2 * pc
    cos = torch.where(q == 0, c, torch.where(q == 1, -s, torch.where(q == 2, -c, s)))
    sin = torch.where(q == 0, s, torch.where(q == 1, c, torch.where(q == 2, -s, -c)))
    return cos, sin


def stein_normals(seed: int, points: torch.Tensor, pairs: torch.Tensor, D: int) -> torch.Tensor:
    """The float32 standard normals z[b, j, :D] of points [B] and pair indices [P] (int64):
    [B, P, D], exactly as the compiled sampler generates them."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    k0, k1 = seed & _MASK32, seed >> 32
    Q = (D + 3) // 4
    dev = points.device
    c0 = torch.arange(Q, dtype=torch.int64, device=dev).view(1, 1, Q)
    pairs = pairs.to(torch.int64).view(1, -1, 1)
    c1, c2 = pairs & _MASK32, (pairs >> 32) & _MASK32
    c3 = (points.to(torch.int64) & _MASK32).view(-1, 1, 1)
    shape = (c3.shape[0], pairs.shape[1], Q)
    w0, w1, w2, w3 = (w.expand(shape) for w in philox4x32_10(c0, c1, c2, c3, k0, k1))
    cos_a, sin_a = _cos_sin_uniform(w1)
    cos_b, sin_b = _cos_sin_uniform(w3)
    # torch's float32 sqrt is not correctly rounded; float64's is, and rounding it to float32
    # is then exact (53 >= 2 * 24 + 2 bits)
    r_a = torch.sqrt((-2.0 * _log_uniform(w0)).double()).float()
    r_b = torch.sqrt((-2.0 * _log_uniform(w2)).double()).float()
    z = torch.stack([r_a * cos_a, r_a * sin_a, r_b * cos_b, r_b * sin_b], dim=-1)
    return z.reshape(shape[0], shape[1], 4 * Q)[..., :D]


def stein_perturb(
    x: torch.Tensor,
    sigma: float,
    seed: int,
    point_offset: int,
    pair_offset: int,
    n_pairs: int,
    antithetic: bool,
) -> torch.Tensor:
    """x [B, D] -> [B, A, P, D]: x + sqrt(sigma) z and (antithetic, A = 2) x - sqrt(sigma) z."""
    B, D = x.shape
    dev = x.device
    z = stein_normals(
        seed,
        torch.arange(point_offset, point_offset + B, device=dev),
        torch.arange(pair_offset, pair_offset + n_pairs, device=dev),
        D,
    )
    step = torch.tensor(math.sqrt(sigma), dtype=x.dtype, device=dev) * z.to(x.dtype)
    plus = x[:, None, :] + step
    if not antithetic:
        return plus[:, None]
    return torch.stack([plus, x[:, None, :] + (-step)], dim=1)


def stein_accumulate(
    h: torch.Tensor,
    hess_acc: torch.Tensor,
    grad_acc: torch.Tensor,
    seed: int,
    point_offset: int,
    pair_offset: int,
    tile_pairs: int,
    z: torch.Tensor | None = None,
) -> None:
    """Per tile t of tile_pairs pairs (numbered globally): hess_acc[:, t % M] += z^T (h+ - h-)
    at h's precision, grad_acc[:, t % M] += sum (h+ + h-) in float64. h [B, A, P, K],
    hess_acc [B, M, D, K] float64, grad_acc [B, M, K] float64; z [B, P, D]: the directions, when
    the caller has them (exactly stein_normals), else regenerated."""
    B, A, P, K = h.shape
    M, D = hess_acc.shape[1], hess_acc.shape[2]
    dev = h.device
    points = torch.arange(point_offset, point_offset + B, device=dev)
    first_tile = pair_offset // tile_pairs
    for t in range((P + tile_pairs - 1) // tile_pairs):
        j0 = t * tile_pairs
        j1 = min(P, j0 + tile_pairs)
        zt = (
            z[:, j0:j1]
            if z is not None
            else stein_normals(seed, points, torch.arange(pair_offset + j0, pair_offset + j1, device=dev), D)
        )
        plus = h[:, 0, j0:j1]
        d = plus - h[:, 1, j0:j1] if A == 2 else plus
        g = (first_tile + t) % M
        hess_acc[:, g] += (zt.to(h.dtype).transpose(1, 2) @ d).double()
        grad_acc[:, g] += h[:, :, j0:j1].double().sum(dim=(1, 2))


def gemm_accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float) -> None:
    """acc += alpha * (aᵀ b), the product at the precision of a and b, the sum in acc's float64.

    acc [R, S] float64; a [K, R], b [K, S] (float32 or float64, same dtype). Like the kernel, no
    temporary the size of acc: float64 products are added in place, float32 ones in row blocks."""
    if a.dtype == torch.float64 and acc.stride(-1) == 1:
        acc.addmm_(a.t(), b, alpha=alpha)
        return
    rows = max(1, (1 << 21) // max(1, acc.shape[1]))
    for r0 in range(0, acc.shape[0], rows):
        acc[r0 : r0 + rows].add_(torch.mm(a[:, r0 : r0 + rows].t(), b), alpha=alpha)


def conv_weight_grad(
    x: torch.Tensor, d: torch.Tensor, out: torch.Tensor, stride, padding, dilation, groups: int
) -> None:
    """out[n, o, c, kh, kw] = sum_{oh,ow} d[n, o, oh, ow] x[n, g*Cg + c, oh*sh - ph + kh*dh,
    ow*sw - pw + kw*dw]; x [N, C, H, W], d [N, O, Ho, Wo], out [N, O, C/groups, kH, kW]."""
    N, C = x.shape[:2]
    O, kH, kW = out.shape[1], out.shape[3], out.shape[4]
    cols = torch.nn.functional.unfold(
        x, (kH, kW), dilation=tuple(dilation), padding=tuple(padding), stride=tuple(stride)
    )
    cols = cols.view(N, groups, (C // groups) * kH * kW, -1)  # [N, g, Cg*kH*kW, L]
    dg = d.reshape(N, groups, O // groups, -1)  # [N, g, Og, L]
    out.copy_(torch.einsum("ngol,ngkl->ngok", dg, cols).reshape(out.shape))


def bias_grad(d: torch.Tensor, out: torch.Tensor) -> None:
    """out[n, o] = sum_t d[n, t, o]; d [N, T, O], out [N, O]."""
    out.copy_(d.sum(1))


def linear_ghost_matvec(a: torch.Tensor, d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(G v)[n, m] = sum_{o,i} d[n, o] a[n, i] v[o*I + i, m]; a [N, I], d [N, O], v [O*I, M]."""
    return torch.einsum("no,ni,oim->nm", d, a, v.reshape(d.shape[1], a.shape[1], v.shape[1]))


def linear_ghost_rmatvec(a: torch.Tensor, d: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(G^T u)[o*I + i, m] = sum_n d[n, o] a[n, i] u[n, m] -> [O*I, M]."""
    return torch.einsum("no,ni,nm->oim", d, a, u).reshape(-1, u.shape[1])


def linear_ghost_sqnorms(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """|g_n|^2 = |a_n|^2 |d_n|^2 -> [N]."""
    return a.square().sum(1) * d.square().sum(1)


def linear_ghost_gram(a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(G G^T)[n, k] = (a_n . a_k)(d_n . d_k) -> [N, N]."""
    return (a @ a.T) * (d @ d.T)


def max_pool_forward(x: torch.Tensor, kernel) -> tuple[torch.Tensor, torch.Tensor]:
    """Max pooling with window = stride = kernel (floor mode): y [N, C, H/kH, W/kW] and the uint8
    window index i*kW + j of the element torch's max_pool2d picks."""
    kH, kW = kernel
    y, flat = torch.nn.functional.max_pool2d(x, (kH, kW), return_indices=True)
    W = x.shape[-1]
    oh = torch.arange(y.shape[-2], device=x.device).view(-1, 1)
    ow = torch.arange(y.shape[-1], device=x.device).view(1, -1)
    idx = (flat // W - oh * kH) * kW + (flat % W - ow * kW)
    return y, idx.to(torch.uint8)


def max_pool_backward(grad_out: torch.Tensor, indices: torch.Tensor, kernel, input_size) -> torch.Tensor:
    """dx [N, C, H, W]: grad_out at each window's chosen element, zero elsewhere."""
    kH, kW = kernel
    N, C, Ho, Wo = grad_out.shape
    onehot = torch.nn.functional.one_hot(indices.long(), kH * kW).to(grad_out.dtype)
    windows = (onehot * grad_out[..., None]).view(N, C, Ho, Wo, kH, kW)
    dx = grad_out.new_zeros(N, C, *input_size)
    dx[:, :, : Ho * kH, : Wo * kW] = windows.permute(0, 1, 2, 4, 3, 5).reshape(N, C, Ho * kH, Wo * kW)
    return dx


def conv_forward(
    x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation, groups: int
) -> torch.Tensor:
    """y = conv2d(x, weight, bias) with zero padding; x [N, C, H, W], weight [O, C/groups, kH, kW]."""
    return torch.nn.functional.conv2d(x, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups)


def kfac_factors(
    a: torch.Tensor, g: torch.Tensor, A: torch.Tensor, S: torch.Tensor, append_one: bool
) -> None:
    """A [I', I'] += a'ᵀa' with a' = [a, 1] (append_one) or a, a [K, I]; S [O, O] += gᵀg, g
    [Kg, O]; products in float64."""
    a64, g64 = a.to(torch.float64), g.to(torch.float64)
    if append_one:
        a64 = torch.cat([a64, a64.new_ones(a64.shape[0], 1)], 1)
    A += a64.T @ a64
    S += g64.T @ g64


def ekfac_correction(
    a: torch.Tensor, g: torch.Tensor, qa: torch.Tensor, qs: torch.Tensor, lam: torch.Tensor, append_one: bool
) -> None:
    """lam [O, I'] += Σ_{r,n} (qsᵀ G_{r,n} qa)² with G_{r,n} = Σ_t g_{r,n,t} a'_{n,t}ᵀ, the
    per-example gradients materialised and rotated (the O(d³) way, in float64).
    a [N, T, I]; g [R·N, T, O]; qa [I', I']; qs [O, O]."""
    N = a.shape[0]
    if N == 0:
        return
    a64 = a.to(torch.float64)
    if append_one:
        a64 = torch.cat([a64, a64.new_ones(*a64.shape[:2], 1)], 2)
    R = g.shape[0] // N
    G = torch.einsum("rnto,nti->rnoi", g.to(torch.float64).reshape(R, N, *g.shape[1:]), a64)
    rotated = qs.to(torch.float64).T @ G @ qa.to(torch.float64)
    lam += rotated.square().sum((0, 1))


# ---- 2-D Ising Monte Carlo (csrc/kernels/ising.h): the same sets, counters and integer
# comparisons as the compiled kernels, vectorised over chains and over each independent set.


def ising_thresholds(beta: torch.Tensor) -> torch.Tensor:
    """[B, 3] int64: floor(p 2^32) of p = exp(-4β), exp(-8β) (Metropolis) and 1 - exp(-2β)
    (Wolff bond) for beta [B] (float64, > 0). Every path compares its random words with these."""
    b = beta.to(torch.float64)
    p = torch.stack([torch.exp(-4.0 * b), torch.exp(-8.0 * b), -torch.expm1(-2.0 * b)], dim=1)
    return torch.floor(p * 2.0**32).to(torch.int64)


def ising_phase_masks(L: int, device=None) -> list[torch.Tensor]:
    """The independent sets of a Metropolis sweep in sweep order, as bool [L, L] masks."""
    i = torch.arange(L, device=device).view(-1, 1)
    j = torch.arange(L, device=device).view(1, -1)
    colour = (i + j) % 2
    rank = ((i == L - 1).long() + (j == L - 1).long()) if L % 2 else torch.zeros_like(colour)
    phase = 3 * colour + rank
    return [phase == p for p in ((0, 1, 2, 3, 4, 5) if L % 2 else (0, 3))]


def _neighbour_sum(s: torch.Tensor) -> torch.Tensor:
    return s.roll(1, 1) + s.roll(-1, 1) + s.roll(1, 2) + s.roll(-1, 2)


def _ising_words(seed: int, c0: torch.Tensor, sweep: int, chains: torch.Tensor, stream):
    """Philox words of counters (c0, sweep, chain, stream): c0 [..., K], chains [B] → 4 × [B, K]."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    c2 = chains.to(torch.int64).view(-1, 1)
    c3 = stream if isinstance(stream, torch.Tensor) else torch.tensor(int(stream), device=c2.device)
    c1 = torch.tensor(int(sweep) & _MASK32, device=c2.device)
    words = philox4x32_10(c0.view(1, -1), c1, c2, c3, seed & _MASK32, seed >> 32)
    shape = (c2.shape[0], c0.numel())
    return [w.expand(shape) for w in words]


def _metropolis_sweep(s: torch.Tensor, thr: torch.Tensor, seed: int, sweep: int, masks) -> torch.Tensor:
    B, L, _ = s.shape
    N = L * L
    k = torch.arange(N, device=s.device)
    words = _ising_words(seed, k // 4, sweep, torch.arange(B, device=s.device), 0)
    w = torch.stack(words, dim=-1).gather(-1, (k % 4).view(1, N, 1).expand(B, N, 1)).view(B, L, L)
    t4, t8 = thr[:, 0].view(B, 1, 1), thr[:, 1].view(B, 1, 1)
    for mask in masks:
        x = s * _neighbour_sum(s)
        flip = mask & ((x <= 0) | (w < torch.where(x == 2, t4, t8)))
        s = torch.where(flip, -s, s)
    return s


def _wolff_sweep(s: torch.Tensor, thr: torch.Tensor, seed: int, sweep: int, clusters: int) -> torch.Tensor:
    """``clusters`` cluster flips in each chain; each cluster is the connected component of its
    seed over the open bonds, found by repeated dilation (the kernel grows it by a stack)."""
    B, L, _ = s.shape
    N = L * L
    dev = s.device
    chains = torch.arange(B, device=dev)
    sites = torch.arange(N, device=dev)
    tw = thr[:, 2].view(B, 1, 1)
    for m in range(clusters):
        stream = torch.tensor(1 + m, device=dev)
        w0, w1, _, _ = _ising_words(seed, torch.tensor([_MASK32], device=dev), sweep, chains, stream)
        start = (((w0[:, 0] >> 1) << 32) | w1[:, 0]) % N
        b0, b1, _, _ = _ising_words(seed, sites, sweep, chains, stream)
        right = (s == s.roll(-1, 2)) & (b0.view(B, L, L) < tw)  # bond (i, j) - (i, j+1)
        down = (s == s.roll(-1, 1)) & (b1.view(B, L, L) < tw)  # bond (i, j) - (i+1, j)
        cluster = torch.zeros(B, N, dtype=torch.bool, device=dev)
        cluster[chains, start] = True
        cluster = cluster.view(B, L, L)
        while True:
            grown = (
                cluster
                | (cluster & right).roll(1, 2)
                | (cluster.roll(-1, 2) & right)
                | (cluster & down).roll(1, 1)
                | (cluster.roll(-1, 1) & down)
            )
            if bool((grown == cluster).all()):
                break
            cluster = grown
        s = torch.where(cluster, -s, s)
    return s


def ising_observables(s: torch.Tensor) -> torch.Tensor:
    """[B, 2] float64 (m, e) per site of chains [B, L, L], from exact integer sums."""
    s = s.to(torch.int64)
    N = s.shape[1] * s.shape[2]
    total = s.sum(dim=(1, 2))
    bonds = (s * (s.roll(-1, 2) + s.roll(-1, 1))).sum(dim=(1, 2))
    return torch.stack([total.double() / N, -bonds.double() / N], dim=1)


def ising_sweeps(
    spins: torch.Tensor,
    thresholds: torch.Tensor,
    n_sweeps: int,
    seed: int,
    sweep_offset: int,
    wolff: bool,
    clusters_per_sweep: int,
    record: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n_sweeps Metropolis (checkerboard order) or Wolff sweeps (clusters_per_sweep cluster flips)
    of each chain of spins [B, L, L] int8, with thresholds [B, 3] from ising_thresholds. Returns
    the new spins and, with record, (m, e) after every sweep [B, n_sweeps, 2] float64 ([B, 0, 2]
    without)."""
    s = spins.to(torch.int64)
    thr = thresholds.to(device=s.device)
    masks = ising_phase_masks(s.shape[1], s.device)
    series = []
    for t in range(n_sweeps):
        sweep = sweep_offset + t
        if wolff:
            s = _wolff_sweep(s, thr, seed, sweep, clusters_per_sweep)
        else:
            s = _metropolis_sweep(s, thr, seed, sweep, masks)
        if record:
            series.append(ising_observables(s))
    out = torch.stack(series, dim=1) if series else s.new_empty((s.shape[0], 0, 2), dtype=torch.float64)
    return s.to(torch.int8), out
