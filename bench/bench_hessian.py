"""Dense Hessian assembly: hessext vs the tools users would otherwise use.

Run as a script (prints a markdown table):  python bench/bench_hessian.py
HESSEXT_BENCH_SCALE=s (default 1.0) scales the number of data points; HESSEXT_BENCH_CASES=a,d
picks cases; HESSEXT_BENCH_LIMIT_S (default 60) is the time beyond which a peer is not run (its
time is estimated from a few rows/columns first) and HESSEXT_BENCH_LIMIT_GB (default 8) the
memory beyond which a vectorised peer is skipped. Reported: wall time, peak RSS growth
(resource.getrusage, so peaks within one process only grow: each measurement runs in a fresh
subprocess), and the assembly's rate as a fraction of the machine's matrix-multiply rate: the time
one BLAS syrk needs for a rank-n update of a P×P matrix (n·P² useful flops, the work of summing n
per-example rank-one terms; syrk measured in the same run at the same precision) divided by the
tool's time. No assertions: benchmarks are not tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SCALE = float(os.environ.get("HESSEXT_BENCH_SCALE", "1.0"))
LIMIT_S = float(os.environ.get("HESSEXT_BENCH_LIMIT_S", "60"))
LIMIT_GB = float(os.environ.get("HESSEXT_BENCH_LIMIT_GB", "8"))


def make_case(name, dtype):
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if name == "a":  # decision-boundary MLP 2-100-100-3, ReLU, 150 points
        model = nn.Sequential(nn.Linear(2, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 3))
        n, x = int(150 * SCALE), None
        x = torch.randn(n, 2, generator=g)
        y = torch.randint(0, 3, (n,), generator=g)
    elif name == "b":  # toolbox 1-D CNN, P = 740, 1000 inputs of length 924
        model = nn.Sequential(
            nn.Conv1d(1, 5, 15, padding=1),
            nn.MaxPool1d(4),
            nn.ReLU(),
            nn.Conv1d(5, 8, 5),
            nn.MaxPool1d(4),
            nn.ReLU(),
            nn.Conv1d(8, 10, 2, padding=1),
            nn.AvgPool1d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(140, 2),
        )
        n = int(1000 * SCALE)
        x = torch.rand(n, 1, 924, generator=g)
        y = torch.randint(0, 2, (n,), generator=g)
    elif name == "c":  # per-sample benchmark CNN adapted to 3 classes (P = 7,203), 450 images
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(800, 3),
        )
        n = int(450 * SCALE)
        x = torch.randn(n, 1, 28, 28, generator=g)
        y = torch.randint(0, 3, (n,), generator=g)
    elif name == "d":  # MLP 20-64-64-2, tanh, 1000 points
        model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
        n = int(1000 * SCALE)
        x = torch.randn(n, 20, generator=g)
        y = torch.randint(0, 2, (n,), generator=g)
    model = model.to(dtype).eval()
    return model, x.to(dtype), y


def flat_loss(model, x, y):
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def L(th):
        d, o = {}, 0
        for n_, s in zip(names, shapes):
            d[n_] = th[o : o + s.numel()].view(s)
            o += s.numel()
        return F.cross_entropy(functional_call(model, d, (x,)), y)

    return theta, L


def run_tool(tool, case, dtype_name):
    """Runs in a fresh process; returns seconds (or an estimate) and notes."""
    import resource

    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, dtype_name)
    model, x, y = make_case(case, dtype)
    P = sum(p.numel() for p in model.parameters())
    n = x.shape[0]
    ce = lambda o, t: F.cross_entropy(o, t, reduction="none")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    note = ""
    if tool in ("hessext.hessian", "hessext.ggn"):
        import hessext

        fn = hessext.hessian if tool == "hessext.hessian" else hessext.ggn
        # warm-up on two examples (one-time library initialisation), as the peers get theirs
        fn(model, ce, (x[:2], y[:2]), dtype=dtype, progress=False)
        t = time.perf_counter()
        fn(model, ce, (x, y), dtype=dtype, progress=False)
        sec = time.perf_counter() - t
    else:
        theta, L = flat_loss(model, x, y)
        if tool == "row loop (double backward)":
            th = theta.clone().requires_grad_(True)
            g = torch.autograd.grad(L(th), th, create_graph=True)[0]
            rows = min(P, 40)
            torch.autograd.grad(g[P - 1], th, retain_graph=True)  # warm-up
            t = time.perf_counter()
            for i in range(rows):
                torch.autograd.grad(g[i], th, retain_graph=True)
            sec = (time.perf_counter() - t) * P / rows
            note = f"estimated from {rows} rows" if rows < P else ""
        else:
            # fully vectorised peers hold every saved activation P times over
            saved = 0

            def pack(t_):
                nonlocal saved
                saved += t_.numel() * t_.element_size()
                return t_

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t_: t_):
                L(theta.clone().requires_grad_(True))
            est_gb = 2 * P * saved / 1e9
            if tool in ("torch.func.hessian", "jacrev(jacrev, chunk_size=32)"):
                # both apply a vmapped product to basis vectors: time one chunk of 32 and scale
                # (torch.func.hessian = jacfwd(jacrev) has no chunking: it holds all P at once)
                from torch.func import grad, jvp, vjp, vmap

                basis = torch.eye(P, dtype=dtype)[:64]

                def chunk(B):
                    if tool == "torch.func.hessian":
                        return vmap(lambda v: jvp(grad(L), (theta,), (v,))[1])(B)
                    _, vjp_fn = vjp(grad(L), theta)
                    return vmap(vjp_fn)(B)

                chunk(basis[:32])  # warm-up: one-time costs are not per chunk
                t = time.perf_counter()
                chunk(basis[32:])
                sec = (time.perf_counter() - t) * P / 32
                note = "estimated from 32 columns"
                if tool == "torch.func.hessian":
                    note += f"; unchunked: needs ~P/32 = {P / 32:.0f}x the chunk's memory"
            elif tool == "autograd.functional.hessian(vectorize=True)":
                if est_gb > LIMIT_GB:
                    return {"skipped": f"needs ~{est_gb:.0f} GB (> {LIMIT_GB:g} GB), not run"}
                t = time.perf_counter()
                torch.autograd.functional.hessian(L, theta, vectorize=True)
                sec = time.perf_counter() - t
            elif tool == "curvlinops HessianLinearOperator @ I":
                try:
                    from curvlinops import HessianLinearOperator
                except ImportError:
                    return {"skipped": "curvlinops not installed"}
                params = [p for p in model.parameters()]
                Hop = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), params, [(x, y)])
                # columns per product: 256, fewer where the vectorised product would not fit in
                # LIMIT_GB (it holds the saved activations once per column)
                block = 256
                while block > 8 and est_gb * block / P > LIMIT_GB:
                    block //= 2
                t = time.perf_counter()
                cols = 0
                for s in range(0, P, block):
                    E = torch.zeros(P, min(block, P - s), dtype=dtype)
                    E[s : s + block].diagonal().fill_(1)
                    Hop @ E
                    cols += E.shape[1]
                    if time.perf_counter() - t > LIMIT_S / 4 and cols < P:
                        break
                sec = (time.perf_counter() - t) * P / cols
                note = (f"estimated from {cols} columns" if cols < P else "") + f" ({block} per product)"
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"seconds": sec, "peak_mb": rss, "note": note, "P": P, "n": n}


def matmul_rates(dtype_name):
    import numpy as np
    import scipy.linalg.blas as blas
    import torch

    dtype = getattr(torch, dtype_name)
    K, P = 1024, 2048
    A = torch.randn(K, P, dtype=dtype)
    torch.mm(A.T, A)
    t = time.perf_counter()
    for _ in range(3):
        torch.mm(A.T, A)
    mm = 3 * 2 * K * P * P / (time.perf_counter() - t) / 1e9
    An = np.asfortranarray(A.numpy().T)  # [P, K] column-major: C = A Aᵀ
    syrk = blas.ssyrk if dtype_name == "float32" else blas.dsyrk
    syrk(1.0, An)
    t = time.perf_counter()
    for _ in range(3):
        syrk(1.0, An)
    sy = (
        3 * K * P * P / (time.perf_counter() - t) / 1e9
    )  # useful flops of the symmetric half... as GEMM-equivalent
    return mm, 2 * sy


TOOLS = [
    "hessext.hessian",
    "hessext.ggn",
    "row loop (double backward)",
    "autograd.functional.hessian(vectorize=True)",
    "torch.func.hessian",
    "jacrev(jacrev, chunk_size=32)",
    "curvlinops HessianLinearOperator @ I",
]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        tool, case, dt = sys.argv[2], sys.argv[3], sys.argv[4]
        print(json.dumps(run_tool(tool, case, dt)))
        return
    cases = os.environ.get("HESSEXT_BENCH_CASES", "a,b,c,d").split(",")
    tools = os.environ.get("HESSEXT_BENCH_TOOLS")
    tools = [TOOLS[int(i)] for i in tools.split(",")] if tools else TOOLS
    print(f"load: {os.getloadavg()}, scale {SCALE}")
    syrk_useful = {}
    for dt in ("float32", "float64"):
        mm, sy = matmul_rates(dt)
        syrk_useful[dt] = sy / 2
        print(f"{dt}: torch.mm {mm:.0f} GFLOP/s, scipy syrk {sy:.0f} GFLOP/s (GEMM-equivalent)")
    print()
    print("| case | tool | dtype | P | n | time (s) | peak RSS (MB) | rate vs syrk | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        for tool in tools:
            dts = ["float32", "float64"] if tool.startswith("hessext") else ["float32"]
            for dt in dts:
                try:
                    r = subprocess.run(
                        [sys.executable, __file__, "--one", tool, case, dt],
                        capture_output=True,
                        text=True,
                        timeout=max(120, 3 * LIMIT_S),
                    )
                    res = (
                        json.loads(r.stdout.strip().splitlines()[-1])
                        if r.returncode == 0
                        else {
                            "skipped": f"failed (exit {r.returncode}"
                            f"{', killed: out of memory?' if r.returncode in (-9, 137) else ''}): "
                            + (r.stderr.strip().splitlines() or [""])[-1][:80]
                        }
                    )
                except subprocess.TimeoutExpired:
                    res = {"skipped": f"timed out (> {max(120, 3 * LIMIT_S):.0f} s)"}
                if "skipped" in res:
                    print(f"| {case} | {tool} | {dt} | | | – | – | – | {res['skipped']} |", flush=True)
                else:
                    frac = res["n"] * res["P"] ** 2 / res["seconds"] / 1e9 / syrk_useful[dt]
                    print(
                        f"| {case} | {tool} | {dt} | {res['P']} | {res['n']} | {res['seconds']:.2f} | "
                        f"{res['peak_mb']:.0f} | {frac:.2f} | {res['note']} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
