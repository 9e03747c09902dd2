"""EK-FAC influence: hessext against Kronfluence, in the same run (docs/benchmarks.md, section
"Structured curvature vs Kronfluence").

Problems (scikit-learn's digits, standardised; 1,500 training examples, 100 queries; models
trained in this run with seeded full-batch Adam):
  mlp  64 → 1024 → 1024 → 10 (ReLU), P = 1,126,410 (mlp512: width 512, P = 301,066)
  cnn  Conv2d(1,32,3,p1)-ReLU-Conv2d(32,64,3,p1)-ReLU-Conv2d(64,128,3,p1)-ReLU-MaxPool2-
       Flatten-Linear(2048,10) on 1×8×8 images, P = 113,162 (convolutions 82 %)

Both tools compute the same thing: EK-FAC factors of the empirical Fisher (data labels, bias as
an appended 1), damping 0.1 × the mean eigenvalue of each layer (Kronfluence's default
heuristic), pairwise scores g_qᵀ (Λ + δ)⁻¹ g_n of every query with every training example.
hessext: ``hessext.ekfac`` + ``hessext.influence`` (its scores × n are Kronfluence's scores);
Kronfluence 1.0.1: ``fit_all_factors`` + ``compute_pairwise_scores`` (CPU, batch 128).

Each tool runs in a fresh process: "first" is the first end-to-end call in that process,
"steady" a second call; "peak" the peak resident memory of the first call above what was
resident before it (Linux /proc/self/clear_refs + VmHWM), in MiB; "first_cpu" the process CPU
time of the first call (on an oversubscribed machine wall times depend on the share of the cores
each process got; CPU times do less). Agreement: Spearman rank
correlation and relative Frobenius difference of all n·m scores against Kronfluence's.

Floor: the flops this computation cannot avoid, at the float32 GEMM rate measured in this run,
plus the measured float64 eigendecompositions of the factors: the factor products
2nT(I'² + O²) per layer, the eigenvalue correction's rotations 2nT(I'² + O²) and products, the
queries' rotations, and the pairwise products 2·n·m·O·I' per layer (Kronfluence additionally
rotates every materialised per-example gradient, 4·n·O·I'(O + I') per layer).

Run: python bench/bench_kfac.py   (HESSEXT_BENCH_THREADS sets torch's threads for every process,
default 1 on a machine whose load average exceeds its cores; HESSEXT_BENCH_PROBLEMS=mlp,cnn;
HESSEXT_BENCH_STEADY=0 skips the second, steady-state call of the slow peer: Kronfluence keeps
no state between calls, so its steady state is its first call less the imports). Each result
line is printed as soon as it is measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

N_TRAIN, N_QUERY = 1500, 100


def _threads() -> int:
    if os.environ.get("HESSEXT_BENCH_THREADS"):
        return int(os.environ["HESSEXT_BENCH_THREADS"])
    return 1 if os.getloadavg()[0] > (os.cpu_count() or 1) else torch.get_num_threads()


def make_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name.startswith("mlp"):  # "mlp" (width 1024) or "mlp<width>"
        w = int(name[3:] or 1024)
        return nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2048, 10),
    )


def make_problem(name: str, folder: Path) -> dict:
    """Train the model (seeded) and save state and data; returns facts for the report."""
    from sklearn.datasets import load_digits  # bench-only dependency

    digits = load_digits()
    X = torch.tensor(digits.data, dtype=torch.float32)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    Y = torch.tensor(digits.target)
    if name == "cnn":
        X = X.reshape(-1, 1, 8, 8)
    x, y = X[:N_TRAIN], Y[:N_TRAIN]
    xq, yq = X[N_TRAIN : N_TRAIN + N_QUERY], Y[N_TRAIN : N_TRAIN + N_QUERY]
    model = make_model(name)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(xq).argmax(1) == yq).float().mean())
    torch.save({"state": model.state_dict(), "train": (x, y), "test": (xq, yq)}, folder / f"{name}.pt")
    return {"P": sum(p.numel() for p in model.parameters()), "query_accuracy": acc}


def load(name: str, folder: Path):
    blob = torch.load(folder / f"{name}.pt")
    model = make_model(name)
    model.load_state_dict(blob["state"])
    return model.eval(), blob["train"], blob["test"]


def ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def run_hessext(model, train, test, workdir):
    import hessext

    E = hessext.ekfac(model, ce, train, progress=False)
    scores = hessext.influence(model, ce, train, test, hessian=E, damping="heuristic", progress=False)
    return scores.T * train[0].shape[0]  # [m, n], Kronfluence's scale


def run_kronfluence(model, train, test, workdir):
    from hessext.testing import kronfluence_pairwise_scores

    return kronfluence_pairwise_scores(
        model, train, test, damping=None, batch_size=128, query_batch_size=N_QUERY, workdir=workdir
    )


METHODS = {"hessext": run_hessext, "kronfluence": run_kronfluence}


def _status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def worker(method: str, name: str, folder: Path) -> None:
    """A fresh process: first call (timed, peak memory), then a steady-state call."""
    torch.set_num_threads(_threads())
    model, train, test = load(name, folder)
    fn = METHODS[method]
    with tempfile.TemporaryDirectory() as work:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _status_kib("VmRSS")
        except OSError:
            before = None
        t, c = time.perf_counter(), time.process_time()
        scores = fn(model, train, test, Path(work) / "first")
        first, first_cpu = time.perf_counter() - t, time.process_time() - c
        peak = (_status_kib("VmHWM") - before) / 1024 if before is not None else float("nan")
        torch.save(scores, folder / f"scores_{method}_{name}.pt")
        del scores
        steady = float("nan")
        if method == "hessext" or os.environ.get("HESSEXT_BENCH_STEADY", "1") != "0":
            t = time.perf_counter()
            fn(model, train, test, Path(work) / "steady")
            steady = time.perf_counter() - t
    print(json.dumps({"first": first, "first_cpu": first_cpu, "steady": steady, "peak_mib": peak}))


def in_worker(method: str, name: str, folder: Path) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", method, name, str(folder)],
        capture_output=True,
        text=True,
    )
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.stderr.write(out.stderr[-3000:])
        return {"first": float("nan"), "steady": float("nan"), "peak_mib": float("nan")}


def layer_shapes(model: nn.Module, x: torch.Tensor):
    """(O, I', T) of every Linear/Conv layer on one input."""
    shapes = []

    def hook(m, args, out):
        if isinstance(m, nn.Linear):
            shapes.append((m.out_features, m.in_features + 1, 1))
        else:
            shapes.append((m.out_channels, m.weight[0].numel() + 1, out[0, 0].numel()))

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()
    return shapes


def floor(model, x) -> dict:
    """Unavoidable flops of EK-FAC influence and the time they take here (module docstring)."""
    torch.set_num_threads(_threads())
    a = torch.randn(2048, 2048)
    a @ a
    t = time.perf_counter()
    for _ in range(3):
        a @ a
    rate = 3 * 2 * 2048**3 / (time.perf_counter() - t)
    n, m = N_TRAIN, N_QUERY
    gemm, eigh_s, kron_extra = 0.0, 0.0, 0.0
    for O, Ia, T in layer_shapes(model, x):
        rot = 2 * T * (Ia * Ia + O * O)
        gemm += 2 * n * rot  # factor products + the correction's rotations
        gemm += 2 * n * T * O * Ia + 2 * m * T * O * Ia + m * rot  # correction, queries
        gemm += 2 * n * m * O * Ia + (2 * n * T * O * Ia if T > 1 else 0)  # pairwise
        kron_extra += 4 * (n + m) * O * Ia * (O + Ia)
        for d in (O, Ia):
            A = torch.randn(d, d, dtype=torch.float64)
            A = A @ A.T
            t = time.perf_counter()
            torch.linalg.eigh(A)
            eigh_s += time.perf_counter() - t
    return {
        "gflop": gemm / 1e9,
        "gemm_gflops": rate / 1e9,
        "eigh_s": eigh_s,
        "floor_s": gemm / rate + eigh_s,
        "kronfluence_rotation_gflop": kron_extra / 1e9,
    }


def spearman(a, b) -> float:
    from hessext.testing import spearman as rank_correlation

    return rank_correlation(a.reshape(-1), b.reshape(-1))


def main():
    problems = os.environ.get("HESSEXT_BENCH_PROBLEMS", "mlp,cnn").split(",")
    threads = _threads()
    print(f"# EK-FAC influence vs Kronfluence ({describe()}; torch threads {threads})\n")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        for name in problems:
            facts = make_problem(name, folder)
            model, (x, _), _ = load(name, folder)
            fl = floor(model, x)
            print(f"  {name}: {json.dumps(facts)} floor {json.dumps(fl)}", flush=True)
            res = {}
            for mth in METHODS:
                res[mth] = in_worker(mth, name, folder)
                print(f"  {name} {mth}: {json.dumps(res[mth])} (load {os.getloadavg()[0]:.1f})", flush=True)
            ours = torch.load(folder / f"scores_hessext_{name}.pt")
            theirs = torch.load(folder / f"scores_kronfluence_{name}.pt")
            rows.append(
                (name, facts, fl, res, spearman(ours, theirs), float((ours - theirs).norm() / theirs.norm()))
            )
    print("| problem | P | tool | first call (s) | steady (s) | peak (MiB) | × floor (steady) |")
    print("|---|---|---|---|---|---|---|")
    for name, facts, fl, res, _, _ in rows:
        for mth, r in res.items():
            best = r["steady"] if r["steady"] == r["steady"] else r["first"]
            print(
                f"| {name} | {facts['P']:,} | {mth} | {r['first']:.2f} | {r['steady']:.2f} | "
                f"{r['peak_mib']:.0f} | {best / fl['floor_s']:.1f} |"
            )
    print(
        "\n| problem | speed-up first (steady) | Spearman vs Kronfluence | rel. difference "
        "| floor (s): GFLOP @ GFLOP/s + eigh |"
    )
    print("|---|---|---|---|---|")
    for name, _, fl, res, rho, rel in rows:
        h, k = res["hessext"], res["kronfluence"]
        steady = k["steady"] if k["steady"] == k["steady"] else k["first"]
        print(
            f"| {name} | {k['first'] / h['first']:.1f}× ({steady / h['steady']:.1f}×) | {rho:.5f} | "
            f"{rel:.2e} | {fl['floor_s']:.2f}: {fl['gflop']:.0f} @ {fl['gemm_gflops']:.0f} "
            f"+ {fl['eigh_s']:.2f} |"
        )
    print(f"\nload average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
    else:
        main()
