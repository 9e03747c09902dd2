"""A σ sweep of SmoothHess: one ``smooth_hessian(sigma=[...])`` call against S separate calls
and against the plain-torch estimator run once per σ, measured in the same run.

Run: python bench/bench_smoothhess_sweep.py     (HESSEXT_BENCH_FULL=1: 16 σ, 2^16 samples)

The problem is the SmoothHess paper's four-quadrant network (2 → 500 → 300 → 250 → 250 → 250 → 1,
untrained: the speed does not depend on the weights) at the origin, 8 σ and 2^14 samples per σ
by default. Every method runs in a fresh interpreter (this file with --worker): the first call
there is the cold one, then REPEATS steady-state calls; the peak memory is the growth of the
process's high-water RSS over the calls. Reported: wall and CPU seconds (CPU = all threads; the
better measure on a loaded machine), the ratio to the floor (the bare batched input-gradient
evaluations of all S·n perturbed copies, z drawn outside the timing) and the peak memory. No
assertions on time.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import torch
from torch import nn

FULL = os.environ.get("HESSEXT_BENCH_FULL", "") == "1"
S = 16 if FULL else 8
N = 2**16 if FULL else 2**14
REPEATS = 3 if FULL else 2
CHUNK = 4096


def network():
    torch.manual_seed(0)
    widths = [2, 500, 300, 250, 250, 250, 1]
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if k:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers).eval()


def sigmas():
    return torch.logspace(-3, 0, S).tolist()


def floor(net, x):
    """Only the forward/backward passes to the inputs of all S·N copies."""
    z = torch.randn(N // 2, 2, generator=torch.Generator().manual_seed(0))
    copies = [torch.cat([x + s**0.5 * z, x - s**0.5 * z]) for s in sigmas()]
    t0, c0 = time.perf_counter(), time.process_time()
    for xp in copies:
        for i in range(0, len(xp), CHUNK):
            inp = xp[i : i + CHUNK].requires_grad_(True)
            torch.autograd.grad(net(inp).sum(), inp)
    return time.perf_counter() - t0, time.process_time() - c0


def torch_per_sigma(net, x):
    """The plain batched-torch antithetic estimator, once per σ (what one writes without
    hessext): z, copies, input gradients, z^T(g+ - g-) into a float64 accumulator."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for s in sigmas():
        H = torch.zeros(2, 2, dtype=torch.float64)
        for i in range(0, N // 2, CHUNK // 2):
            z = torch.randn(min(CHUNK // 2, N // 2 - i), 2, generator=gen)
            inp = torch.cat([x + s**0.5 * z, x - s**0.5 * z]).requires_grad_(True)
            (g,) = torch.autograd.grad(net(inp).sum(), inp)
            k = len(z)
            H += (z.T @ (g[:k] - g[k:])).double()
        H /= N * s**0.5
        out.append(0.5 * (H + H.T))
    return torch.stack(out)


def hessext_separate(net, x):
    import hessext

    return torch.stack(
        [hessext.smooth_hessian(net, x, sigma=s, n_samples=N, progress=False).hessian for s in sigmas()]
    )


def hessext_sweep(net, x):
    import hessext

    return hessext.smooth_hessian(net, x, sigma=sigmas(), n_samples=N, progress=False).hessian


METHODS = {
    "hessext sweep (one call, shared z)": hessext_sweep,
    "hessext, one call per σ": hessext_separate,
    "torch batched estimator per σ": torch_per_sigma,
}


def worker(name: str) -> dict:
    torch.set_num_threads(1)
    net, x = network(), torch.zeros(2)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runs = []
    for _ in range(REPEATS + 1):
        if name == "floor":
            runs.append(floor(net, x))
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        METHODS[name](net, x)
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    steady = sorted(runs[1:], key=lambda r: r[1])[len(runs[1:]) // 2]
    return {"first": runs[0], "steady": steady, "peak_mib": peak}


def main() -> None:
    res = {}
    for name in ["floor", *METHODS]:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", name], capture_output=True, text=True, check=True
        ).stdout
        res[name] = json.loads(out.strip().splitlines()[-1])
    fl = res["floor"]["steady"][1]
    print(f"σ sweep: S = {S} variances, {N} samples each, four-quadrant network; uptime: {os.getloadavg()}")
    print(
        f"{'method':40s} {'first wall/CPU s':>18s} {'steady wall/CPU s':>18s}"
        f" {'CPU / floor':>11s} {'peak MiB':>9s}"
    )
    for name, r in res.items():
        print(
            f"{name:40s} {r['first'][0]:8.2f}/{r['first'][1]:<8.2f}"
            f" {r['steady'][0]:8.2f}/{r['steady'][1]:<8.2f}"
            f" {r['steady'][1] / fl:11.2f} {r['peak_mib']:9.1f}"
        )


def test_bench_sigma_sweep():
    main()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2])))
    else:
        main()
