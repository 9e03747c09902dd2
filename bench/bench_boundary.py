"""The decision-boundary pipeline's two hot spots against what users would otherwise run.

Run as a script (prints markdown tables):  python bench/bench_boundary.py

1. Training S MLPs 2-W-W-3 on the paper's 150 three-Gaussian points (plain SGD, lr 0.02,
   batch 64): hessext.training.train_mlps (fused, all S at once) vs hessext.training.train one
   model at a time (a standard autograd + torch.optim.SGD loop) vs torch.func's model
   ensembling (stack_module_state + vmap(grad), the PyTorch tutorial's way to train many small
   models at once). The floor: the same S·epochs·3 steps' matrix products alone (one batched
   GEMM per layer and pass), measured in the same run.
2. Every eigenpair with λ ≠ 0 of the exact Hessian of a trained MLP: hessext.curvature.range_eigh
   vs torch.linalg.eigh (LAPACK syevd) vs scipy.linalg.eigh (syevr), and the floor: one GEMM
   H @ Ω of the sketch's width.

Each measurement runs in a fresh subprocess (first call) and then again in the same process
(steady state); wall and CPU seconds and the peak RSS growth are reported. HESSEXT_BENCH_WIDTH
(default 100 = the paper's; the full eigh of P = 10,703 takes minutes), HESSEXT_BENCH_EPOCHS
(default 200), HESSEXT_BENCH_SEEDS (default 3), HESSEXT_BENCH_THREADS (default 1),
HESSEXT_BENCH_PARTS (default "train,eig"). No assertions: benchmarks are not tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _machine import describe  # noqa: E402

WIDTH = int(os.environ.get("HESSEXT_BENCH_WIDTH", "100"))
EPOCHS = int(os.environ.get("HESSEXT_BENCH_EPOCHS", "200"))
SEEDS = int(os.environ.get("HESSEXT_BENCH_SEEDS", "3"))
THREADS = int(os.environ.get("HESSEXT_BENCH_THREADS", "1"))
PARTS = os.environ.get("HESSEXT_BENCH_PARTS", "train,eig").split(",")


def _problem():
    from hessext.datasets import toy2d

    x, y = toy2d.three_gaussians()
    s = toy2d.split(x, y)
    return s.x_train, s.y_train


def _timed(fn):
    import resource
    import time

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return wall, cpu, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024


def train_tool(tool: str) -> dict:
    import copy

    import torch

    from hessext.models import mlp
    from hessext.training import train, train_mlps

    torch.set_num_threads(THREADS)
    x, y = _problem()
    starts = [mlp(2, WIDTH, WIDTH, 3, seed=s) for s in range(SEEDS)]

    def fused():
        train_mlps(
            [copy.deepcopy(m) for m in starts],
            x,
            y,
            epochs=EPOCHS,
            lr=0.02,
            batch_size=64,
            seeds=list(range(SEEDS)),
        )

    def loop():
        for s, m in enumerate(starts):
            train(copy.deepcopy(m), x, y, epochs=EPOCHS, lr=0.02, batch_size=64, seed=s)

    def ensemble():
        from torch.func import functional_call, grad, stack_module_state, vmap

        params, _ = stack_module_state([copy.deepcopy(m) for m in starts])
        base = copy.deepcopy(starts[0]).to("meta")

        def loss(p, xb, yb):
            return torch.nn.functional.cross_entropy(functional_call(base, p, (xb,)), yb)

        step = vmap(grad(loss))
        gens = [torch.Generator().manual_seed(s) for s in range(SEEDS)]
        for _ in range(EPOCHS):
            order = torch.stack([torch.randperm(len(y), generator=g) for g in gens])
            for start in range(0, len(y), 64):
                idx = order[:, start : start + 64]
                g = step(params, x[idx], y[idx])
                with torch.no_grad():
                    for k in params:
                        params[k].sub_(0.02 * g[k])

    def floor():
        S, n = SEEDS, len(y)
        W = [torch.randn(S, WIDTH, 2), torch.randn(S, WIDTH, WIDTH), torch.randn(S, 3, WIDTH)]
        for _ in range(EPOCHS):
            for start in range(0, n, 64):
                b = min(64, n - start)
                a = [torch.randn(S, b, 2), torch.randn(S, b, WIDTH), torch.randn(S, b, WIDTH)]
                d = [torch.randn(S, b, WIDTH), torch.randn(S, b, WIDTH), torch.randn(S, b, 3)]
                for l in range(3):  # forward, weight gradient, input gradient
                    torch.bmm(a[l], W[l].transpose(1, 2))
                    torch.bmm(d[l].transpose(1, 2), a[l])
                    if l:
                        torch.bmm(d[l], W[l])

    fn = {
        "train_mlps (fused)": fused,
        "train (one at a time)": loop,
        "torch.func ensemble": ensemble,
        "floor: the GEMMs alone": floor,
    }[tool]
    first = _timed(fn)
    steady = _timed(fn)
    return {"first": first, "steady": steady}


def eig_tool(tool: str) -> dict:
    import numpy as np
    import scipy.linalg
    import torch
    from torch import nn

    from hessext.curvature import hessian, range_eigh
    from hessext.models import mlp
    from hessext.training import train_mlps

    torch.set_num_threads(THREADS)
    x, y = _problem()
    model = mlp(2, WIDTH, WIDTH, 3, seed=0)
    train_mlps([model], x, y, epochs=2000, lr=0.02, batch_size=64, seeds=[0])
    A = hessian(model, nn.CrossEntropyLoss(reduction="none"), (x, y), progress=False).dense()
    info: dict = {"P": A.shape[0]}

    def ours():
        r = range_eigh(A)
        info.update(rank=r.rank, sketch=r.sketch, method=r.method, residual=r.residual)

    def floor():
        k = info.get("sketch") or min(2048, max(32, A.shape[0] // 4))
        A @ torch.randn(A.shape[0], k, dtype=torch.float64)

    fn = {
        "range_eigh": ours,
        "torch.linalg.eigh": lambda: torch.linalg.eigh(A),
        "scipy.linalg.eigh (evr)": lambda: scipy.linalg.eigh(
            np.array(A.numpy()), driver="evr", overwrite_a=True
        ),
        "floor: one GEMM H @ Ω": floor,
    }[tool]
    if tool.startswith("floor"):
        ours()
    first = _timed(fn)
    return {"first": first, "info": info}


def _sub(kind: str, tool: str) -> dict:
    code = (
        f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import json, bench_boundary as b; "
        f"print(json.dumps(b.{kind}({tool!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    print(f"Machine: {describe()}; torch threads {THREADS}\n")
    if "train" in PARTS:
        _train_table()
    if "eig" in PARTS:
        _eig_table()


def _train_table():
    print(f"### Training {SEEDS} MLPs 2-{WIDTH}-{WIDTH}-3, {EPOCHS} epochs of 3 SGD steps\n")
    print("| tool | first call: wall s | CPU s | steady: wall s | CPU s | CPU vs fused | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    rows = {
        t: _sub("train_tool", t)
        for t in (
            "train_mlps (fused)",
            "train (one at a time)",
            "torch.func ensemble",
            "floor: the GEMMs alone",
        )
    }
    ref = rows["train_mlps (fused)"]["steady"][1]
    for t, r in rows.items():
        (w1, c1, m1), (w2, c2, m2) = r["first"], r["steady"]
        print(f"| {t} | {w1:.2f} | {c1:.2f} | {w2:.2f} | {c2:.2f} | {c2 / ref:.2f}x | {max(m1, m2):.0f} |")


def _eig_table():
    print(f"\n### Eigenpairs with λ ≠ 0 of the exact Hessian, MLP 2-{WIDTH}-{WIDTH}-3 (2,000 epochs)\n")
    print("| tool | wall s | CPU s | CPU vs range_eigh | peak RSS MB | notes |")
    print("|---|---|---|---|---|---|")
    rows = {
        t: _sub("eig_tool", t)
        for t in ("range_eigh", "torch.linalg.eigh", "scipy.linalg.eigh (evr)", "floor: one GEMM H @ Ω")
    }
    ref = rows["range_eigh"]["first"][1]
    for t, r in rows.items():
        w, c, m = r["first"]
        note = json.dumps(r["info"]) if t == "range_eigh" else ""
        print(f"| {t} | {w:.1f} | {c:.1f} | {c / ref:.2f}x | {m:.0f} | {note} |")


if __name__ == "__main__":
    main()
