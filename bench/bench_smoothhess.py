"""SmoothHess estimator speed, memory and error: hessext.smooth_hessian against the pure-torch
ways of computing the same antithetic Stein estimate, measured in the same run.

Run: python bench/bench_smoothhess.py        (or pytest bench/bench_smoothhess.py -s)
     HESSEXT_BENCH_FULL=1 ...   the issue's sizes: 10^5 samples per point for 1 and 16 points
     on the MNIST MLP, 5 repeats, errors against a 10^6-sample estimate. The default (a few
     minutes on 2 loaded cores): 10^4 samples for 1 and 16 points, 2 repeats (1 for 16 points),
     errors at 10^4 and 10^5 against a 4*10^5-sample estimate.

Every measurement runs in a fresh interpreter (this file with --worker), so the peak memory is
the growth of the process's high-water RSS (resource.getrusage ru_maxrss) over the method call,
and the methods alternate within each repeat so that a change of machine load hits all of them.
Reported: median wall and CPU seconds (CPU = all threads of the process: the better measure on
a loaded machine), samples per second, both as ratios to the bare input-gradient evaluations,
and peak memory. No assertions on time.

What each row measures (all rows: the same model, points, σ, antithetic pairs, chunks of 4096
model rows, the logit of the class predicted at each point):
- bare ∇f (input gradients): only forward + backward to the inputs at the 2·n1 perturbed
  copies; z drawn and the copies formed outside the timed region. The issue's "bare batched
  gradient evaluations", the reference of every "vs bare" ratio.
- bare ∂f/∂a1 (rest of the net): only forward + backward from the first Linear layer's output
  a1 = W1 x + b1 ± W1 √σ z (formed outside the timing) through the rest of the network: the
  part of the network hessext evaluates when the model starts with a Linear layer, so
  hessext - this row = everything hessext adds (z, the first-layer GEMM per pair, the
  accumulation, the finish, the standard error).
- hessext.smooth_hessian: the whole call, standard error on (the default); "(no stderr)" with
  return_stderr=False.
- torch batched + GEMM: torch.randn z, copies, input gradients, z^T(g+ - g-) per chunk in float32
  added into a float64 D x D accumulator (the plain batched-torch estimator).
- torch batched + dsyr2k: the same with the symmetric rank-2k update of SciPy's BLAS.
- torch first-layer trick: pure torch with hessext's algorithm written by hand (first-layer
  GEMM per pair, gradients w.r.t. a1, z^T(h+ - h-) in K-space, one product with W1 at the end):
  the best pure-torch path we know of, without standard error.
- torch.func vmap + GEMM: per-sample gradients by vmap(grad), then the same GEMM.
- per-sample loop: one forward/backward per perturbed copy, extrapolated from a few hundred.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

FULL = os.environ.get("HESSEXT_BENCH_FULL", "") == "1"
# On a shared, loaded machine CPU seconds of a single-threaded process are the only stable
# measure (with 2 threads, OpenMP spin-waits under oversubscription inflate CPU time and the
# wall time follows the neighbours' load); HESSEXT_BENCH_THREADS=2 for a quiet machine.
THREADS = int(os.environ.get("HESSEXT_BENCH_THREADS", "1"))
REPEATS = int(os.environ.get("HESSEXT_BENCH_REPEATS", "5" if FULL else "2"))
CHUNK = 4096  # model rows per forward/backward for every batched method
MNIST = (784, 500, 300, 250, 250, 250, 10)
SMALL = (784, 256, 256, 10)


def mlp(widths):
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers).eval()


def problem(widths, points):
    net = mlp(widths)
    x = torch.randn(points, widths[0], generator=torch.Generator().manual_seed(1)) * 0.5
    sigma = 1.8e-4 if widths == MNIST else 0.05  # the original's MNIST variance
    with torch.no_grad():
        cls = net(x).argmax(1)
    return net, x, sigma, cls


def _grads(net, xp, cls):
    xp = xp.requires_grad_(True)
    (g,) = torch.autograd.grad(net(xp)[:, cls].sum(), xp)
    return g


def _clocks():
    return np.array([time.perf_counter(), time.process_time()])


def bare_gradients(net, x, sigma, n, cls):
    """Timed: only the input-gradient evaluations (returns the timed (wall, CPU) seconds)."""
    pairs, t = n // 2, np.zeros(2)
    z = torch.randn(min(pairs, CHUNK // 2), x.numel())
    for j in range(0, pairs, CHUNK // 2):
        p = min(CHUNK // 2, pairs - j)
        xp = torch.cat([x + math.sqrt(sigma) * z[:p], x - math.sqrt(sigma) * z[:p]])
        t0 = _clocks()
        _grads(net, xp, cls)
        t += _clocks() - t0
    return t


def bare_hidden_gradients(net, x, sigma, n, cls):
    """Timed: only forward/backward of net[1:] from the first layer's outputs."""
    pairs, t, rest = n // 2, np.zeros(2), net[1:]
    with torch.no_grad():
        z = torch.randn(min(pairs, CHUNK // 2), x.numel())
        c, Y = net[0](x[None]), math.sqrt(sigma) * z @ net[0].weight.T
    for j in range(0, pairs, CHUNK // 2):
        p = min(CHUNK // 2, pairs - j)
        a = torch.cat([c + Y[:p], c - Y[:p]]).requires_grad_(True)
        t0 = _clocks()
        (h,) = torch.autograd.grad(rest(a)[:, cls].sum(), a)
        t += _clocks() - t0
    return t


def batched_gemm(net, x, sigma, n, cls, syr2k=False, seed=0):
    D, pairs = x.numel(), n // 2
    gen = torch.Generator().manual_seed(seed)
    acc = torch.zeros(D, D, dtype=torch.float64)
    acc_np = np.zeros((D, D), order="F")
    if syr2k:
        from scipy.linalg.blas import dsyr2k
    for j in range(0, pairs, CHUNK // 2):
        p = min(CHUNK // 2, pairs - j)
        z = torch.randn(p, D, generator=gen)
        g = _grads(net, torch.cat([x + math.sqrt(sigma) * z, x - math.sqrt(sigma) * z]), cls)
        d = g[:p] - g[p:]
        if syr2k:  # upper triangle of z dᵀ + d zᵀ
            acc_np = dsyr2k(
                1.0, z.double().numpy().T, d.double().numpy().T, beta=1.0, c=acc_np, lower=0, overwrite_c=1
            )
        else:
            acc += (z.T @ d).double()
    if syr2k:
        acc = torch.from_numpy(np.triu(acc_np) + np.triu(acc_np, 1).T) / 2
    else:
        acc = (acc + acc.T) / 2
    return acc / (n * math.sqrt(sigma))


def first_layer_trick(net, x, sigma, n, cls, seed=0):
    D, pairs, W, rest = x.numel(), n // 2, net[0].weight.detach(), net[1:]
    gen = torch.Generator().manual_seed(seed)
    acc = torch.zeros(D, W.shape[0], dtype=torch.float64)
    with torch.no_grad():
        c = net[0](x[None])
    for j in range(0, pairs, CHUNK // 2):
        p = min(CHUNK // 2, pairs - j)
        z = torch.randn(p, D, generator=gen)
        with torch.no_grad():
            Y = math.sqrt(sigma) * z @ W.T
        a = torch.cat([c + Y, c - Y]).requires_grad_(True)
        (h,) = torch.autograd.grad(rest(a)[:, cls].sum(), a)
        acc += (z.T @ (h[:p] - h[p:])).double()
    H = acc @ W.double()
    return (H + H.T) / (2 * n * math.sqrt(sigma))


def vmap_estimator(net, x, sigma, n, cls):
    D, pairs = x.numel(), n // 2
    gen = torch.Generator().manual_seed(0)
    grad_fn = torch.func.vmap(torch.func.grad(lambda v: net(v[None])[0, cls]))
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


def _hessext(net, x, sigma, n, stderr, seed=0):
    import hessext

    return hessext.smooth_hessian(
        net, x, sigma=sigma, n_samples=n, batch_size=CHUNK, seed=seed, progress=False, return_stderr=stderr
    )


PER_POINT = {
    "bare ∇f (input gradients)": bare_gradients,
    "bare ∂f/∂a1 (rest of the net)": bare_hidden_gradients,
    "torch batched + GEMM": batched_gemm,
    "torch batched + dsyr2k": lambda *a: batched_gemm(*a, syr2k=True),
    "torch first-layer trick": first_layer_trick,
    "torch.func vmap + GEMM": vmap_estimator,
    "per-sample loop": loop_estimator,
}
TIMED_INSIDE = ("bare ∇f (input gradients)", "bare ∂f/∂a1 (rest of the net)")


def worker(spec):
    """One measurement in this fresh process: {"wall", "cpu", "peak_mb"}; the estimate is saved
    to spec["save"] when given."""
    torch.set_num_threads(THREADS)
    net, x, sigma, cls = problem(tuple(spec["widths"]), spec["points"])
    method, n = spec["method"], spec["n"]
    # warm-up outside the measurement: library loading, lazy initialisation
    # (on a tiny problem: the high-water mark must not already hold this run's buffers)
    if method.startswith("hessext"):
        import hessext

        hessext.smooth_hessian(
            nn.Sequential(nn.Linear(3, 2)), torch.ones(1, 3), sigma=0.1, n_samples=64, progress=False
        )
    else:
        PER_POINT[method](net, x[0], sigma, 8 if method == "per-sample loop" else 512, int(cls[0]))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w0, c0 = time.perf_counter(), time.process_time()
    if method.startswith("hessext"):
        r = _hessext(net, x, sigma, n, "no stderr" not in method, spec.get("seed", 0))
        est = r.hessian
    else:
        fn = PER_POINT[method]
        outs = [fn(net, x[b], sigma, n, int(cls[b])) for b in range(x.shape[0])]
        est = None if method in TIMED_INSIDE else torch.stack(outs)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if method in TIMED_INSIDE:  # drawing z and forming the copies excluded
        wall, cpu = (float(v) for v in sum(outs))
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    if spec.get("save") and est is not None:
        torch.save(est.double(), spec["save"])
    print(json.dumps({"wall": wall, "cpu": cpu, "peak_mb": peak}))


def measure(spec):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_case(widths, n, points, repeats, methods, loop_n=400):
    rows = {m: [] for m in methods}
    for _ in range(repeats):
        for m in methods:
            nn_ = loop_n if m == "per-sample loop" else n
            pts = 1 if m == "per-sample loop" else points
            res = measure(dict(widths=widths, n=nn_, points=pts, method=m))
            scale = points * n / (pts * nn_)  # the loop is extrapolated
            rows[m].append({k: v * (scale if k != "peak_mb" else 1) for k, v in res.items()})
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in rows.items()}
    base = med[methods[0]]
    load = os.getloadavg()
    print(
        f"\n### MLP {'-'.join(map(str, widths))}, {points} point(s), {n} samples/point, "
        f"{repeats} repeat(s), torch threads={THREADS}, "
        f"load avg {load[0]:.1f} / {load[1]:.1f}\n"
    )
    print("| method | wall s | CPU s | samples/s (wall) | wall / bare | CPU / bare | peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m, r in med.items():
        name = m + (f" (x{points * n // loop_n} from {loop_n})" if m == "per-sample loop" else "")
        print(
            f"| {name} | {r['wall']:.3f} | {r['cpu']:.3f} | {points * n / r['wall']:,.0f} | "
            f"{r['wall'] / base['wall']:.2f} | {r['cpu'] / base['cpu']:.2f} | "
            f"{r['peak_mb']:.0f} |"
        )
    sys.stdout.flush()
    return med


def error_table(widths, ns, n_ref, methods=("hessext.smooth_hessian", "torch batched + GEMM")):
    """Relative Frobenius error of one point's estimate at each n against an independent
    n_ref-sample hessext estimate (another seed), next to what the reported standard errors
    predict for that difference: sqrt(||SE_n||² + ||SE_ref||²) / ||Ĥ_ref||."""
    import hessext

    net, x, sigma, cls = problem(tuple(widths), 1)
    ref = _hessext(net, x, sigma, n_ref, True, seed=12345)
    H_ref, se_ref = ref.hessian[0], ref.hessian_stderr[0]
    norm = H_ref.norm()
    print(
        f"\n### Error of one point's estimate vs a {n_ref:,}-sample hessext estimate "
        f"(MLP {'-'.join(map(str, widths))}, ||Ĥ_ref||_F = {norm:.3e}, its own relative "
        f"standard error {se_ref.norm() / norm:.3f})\n"
    )
    print("| method | samples | ‖Ĥ − Ĥ_ref‖_F / ‖Ĥ_ref‖_F | predicted by the reported stderr |")
    print("|---|---:|---:|---:|")
    for n in ns:
        for m in methods:
            if m.startswith("hessext"):
                r = _hessext(net, x, sigma, n, True)
                H, pred = r.hessian[0], (r.hessian_stderr[0].norm() ** 2 + se_ref.norm() ** 2).sqrt()
                pred = f"{pred / norm:.3f}"
            else:
                H, pred = batched_gemm(net, x[0], sigma, n, int(cls[0])), "-"
            print(f"| {m} | {n:,} | {(H - H_ref).norm() / norm:.3f} | {pred} |")
    sys.stdout.flush()
    del hessext


ALL = [
    "bare ∇f (input gradients)",
    "bare ∂f/∂a1 (rest of the net)",
    "hessext.smooth_hessian",
    "hessext (no stderr)",
    "torch batched + GEMM",
    "torch batched + dsyr2k",
    "torch first-layer trick",
    "torch.func vmap + GEMM",
    "per-sample loop",
]
FEW = [
    "bare ∇f (input gradients)",
    "bare ∂f/∂a1 (rest of the net)",
    "hessext.smooth_hessian",
    "torch batched + GEMM",
    "torch first-layer trick",
]


def test_bench_mnist_mlp_one_point():
    run_case(MNIST, 100_000 if FULL else 10_000, 1, REPEATS, ALL, loop_n=100)


def test_bench_mnist_mlp_16_points():
    run_case(MNIST, 100_000 if FULL else 10_000, 16, 1, FEW)


def test_bench_small_mlp():
    run_case(SMALL, 5000, 1, REPEATS, ALL, loop_n=200)


def test_bench_error():
    torch.set_num_threads(THREADS)
    error_table(MNIST, (10_000, 100_000), 1_000_000 if FULL else 400_000)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
    else:
        print(f"uptime: {os.popen('uptime').read().strip()}")
        which = sys.argv[1:] or ["mnist1", "small", "mnist16", "error"]
        for w in which:
            {
                "mnist1": test_bench_mnist_mlp_one_point,
                "mnist16": test_bench_mnist_mlp_16_points,
                "small": test_bench_small_mlp,
                "error": test_bench_error,
            }[w]()
        print(f"uptime: {os.popen('uptime').read().strip()}")
