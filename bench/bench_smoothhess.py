"""SmoothHess estimator speed: hessext.smooth_hessian against the pure-torch ways of computing
the same antithetic Stein estimate, measured in the same run.

Run: python bench/bench_smoothhess.py   (or pytest bench/bench_smoothhess.py -s)
HESSEXT_BENCH_FULL=1 uses the issue's full sizes (10^5 gradient calls per point, 1 and 16
points on the MNIST MLP); the default scales the MNIST case to 10^4 calls and 1 point so the file
finishes in a few minutes on 2 cores. Reports seconds, samples/s, peak traced memory and the
overhead over the bare batched gradient evaluations. No assertions on time.
"""

import math
import os
import time
import tracemalloc

import numpy as np
import torch
from torch import nn

import hessext

FULL = os.environ.get("HESSEXT_BENCH_FULL", "") == "1"
CHUNK = 4096  # rows per forward/backward for every batched method


def mlp(widths):
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers).eval()


def _grads(net, xp, cls):
    xp = xp.requires_grad_(True)
    (g,) = torch.autograd.grad(net(xp)[:, cls].sum(), xp)
    return g


def bare_gradients(net, x, sigma, n, cls):
    """Only the batched gradient evaluations at x ± √σ z (z drawn outside the timing)."""
    D, pairs = x.numel(), n // 2
    z = torch.randn(min(pairs, CHUNK // 2), D)
    t = 0.0
    for j in range(0, pairs, CHUNK // 2):
        p = min(CHUNK // 2, pairs - j)
        xp = torch.cat([x + math.sqrt(sigma) * z[:p], x - math.sqrt(sigma) * z[:p]])
        t0 = time.perf_counter()
        _grads(net, xp, cls)
        t += time.perf_counter() - t0
    return t


def batched_gemm(net, x, sigma, n, cls, syr2k=False):
    """Plain batched torch: draw z, perturb, gradients, one GEMM per chunk (or BLAS dsyr2k)."""
    D, pairs = x.numel(), n // 2
    gen = torch.Generator().manual_seed(0)
    acc = torch.zeros(D, D, dtype=torch.float64)
    acc_np = np.zeros((D, D), order="F")
    if syr2k:
        from scipy.linalg.blas import dsyr2k
    for j in range(0, pairs, CHUNK // 2):
        p = min(CHUNK // 2, pairs - j)
        z = torch.randn(p, D, generator=gen)
        g = _grads(net, torch.cat([x + math.sqrt(sigma) * z, x - math.sqrt(sigma) * z]), cls)
        d = g[:p] - g[p:]
        if syr2k:  # upper triangle of z dᵀ + d zᵀ, symmetric rank-2k update
            acc_np = dsyr2k(0.5, z.double().numpy().T, d.double().numpy().T, beta=1.0, c=acc_np,
                            lower=0, overwrite_c=1)
        else:
            acc += (z.T @ d).double()
    if syr2k:
        acc = torch.from_numpy(np.triu(acc_np) + np.triu(acc_np, 1).T)
    return acc / (n * math.sqrt(sigma))


def vmap_estimator(net, x, sigma, n, cls):
    D, pairs = x.numel(), n // 2
    gen = torch.Generator().manual_seed(0)
    f = lambda v: net(v[None])[0, cls]  # noqa: E731
    grad_fn = torch.func.vmap(torch.func.grad(f))
    acc = torch.zeros(D, D, dtype=torch.float64)
    for j in range(0, pairs, CHUNK // 2):
        p = min(CHUNK // 2, pairs - j)
        z = torch.randn(p, D, generator=gen)
        g = grad_fn(torch.cat([x + math.sqrt(sigma) * z, x - math.sqrt(sigma) * z]))
        acc += (z.T @ (g[:p] - g[p:])).double()
    return acc


def loop_estimator(net, x, sigma, n, cls):
    D = x.numel()
    gen = torch.Generator().manual_seed(0)
    acc = torch.zeros(D, D, dtype=torch.float64)
    for _ in range(n // 2):
        z = torch.randn(D, generator=gen)
        gp = _grads(net, (x + math.sqrt(sigma) * z)[None], cls)[0]
        gm = _grads(net, (x - math.sqrt(sigma) * z)[None], cls)[0]
        acc += torch.outer(z, gp - gm).double()
    return acc


def timed(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    t = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return t, peak, out


def run_case(widths, n, points, loop_n):
    net = mlp(widths)
    D = widths[0]
    x = torch.randn(points, D) * 0.5
    sigma = 1.8e-4 if widths[1] == 500 else 0.05
    cls = int(net(x[:1]).argmax())
    rows = []
    t_bare = sum(bare_gradients(net, x[b], sigma, n, cls) for b in range(points))
    rows.append(("bare batched gradients", t_bare, None))
    t, peak, r = timed(lambda: hessext.smooth_hessian(net, x, sigma=sigma, n_samples=n,
                                                      batch_size=CHUNK, progress=False))
    rows.append(("hessext.smooth_hessian", t, peak))
    t, peak, _ = timed(lambda: hessext.smooth_hessian(net, x, sigma=sigma, n_samples=n,
                                                      batch_size=CHUNK, progress=False,
                                                      return_stderr=False))
    rows.append(("hessext (no stderr)", t, peak))
    for name, fn in [("torch batched + GEMM", lambda b: batched_gemm(net, x[b], sigma, n, cls)),
                     ("torch batched + dsyr2k", lambda b: batched_gemm(net, x[b], sigma, n, cls, True)),
                     ("torch.func vmap + GEMM", lambda b: vmap_estimator(net, x[b], sigma, n, cls))]:
        t, peak, _ = timed(lambda: [fn(b) for b in range(points)])
        rows.append((name, t, peak))
    t, _, _ = timed(lambda: loop_estimator(net, x[0], sigma, loop_n, cls))
    rows.append((f"per-sample loop (x{points * n / loop_n:.0f} from {loop_n})", t * points * n / loop_n, None))
    print(f"\nMLP {'-'.join(map(str, widths))}, {points} point(s), {n} samples/point, "
          f"threads={torch.get_num_threads()}, load={os.getloadavg()[0]:.1f}")
    print(f"{'method':44s} {'s':>8s} {'samples/s':>10s} {'vs bare':>8s} {'peak MB':>8s}")
    for name, t, peak in rows:
        print(f"{name:44s} {t:8.3f} {points * n / t:10.0f} {t / t_bare:8.2f} "
              f"{(peak or 0) / 2**20:8.1f}")
    print(f"mean reported stderr of Ĥ entries: {r.hessian_stderr.mean():.3e}, "
          f"mean |Ĥ|: {r.hessian.abs().mean():.3e}")
    return r


def test_bench_mnist_mlp():
    n = 100_000 if FULL else 10_000
    for points in ((1, 16) if FULL else (1,)):
        run_case((784, 500, 300, 250, 250, 250, 10), n, points, loop_n=500)


def test_bench_small_mlp():
    run_case((784, 256, 256, 10), 5000, 1, loop_n=5000 if FULL else 1000)


if __name__ == "__main__":
    test_bench_mnist_mlp()
    test_bench_small_mlp()
