"""Exact curvature as users call it: the first call in a fresh process, the steady state, and the
floor of the machine, measured in the same run.

Rows:
  (a) decision-boundary MLP 2-100-100-3 ReLU (P = 10,703, N = 150; bench_hessian.py's case a):
      hessext.hessian at float32 and float64 products, hessext.ggn at float32;
  (b) the toolbox CNN (hessext.models.Conv1DToolbox, P = 740) on 1,000 inputs of length 924:
      hessext.hessian at float32 and float64 products;
  (c) influence end to end (bench_toolbox.py's problem: MLP 20-50-50-2 tanh, P = 3,702,
      n_train = 2,000, n_test = 50): hessext.influence from the trained model (exact float64
      Hessian, Cholesky, solves, training gradients, scores).

For each row, HESSEXT_BENCH_FRESH (default 3) fresh worker processes each time their first call
(after the imports and the data are in place; what a user's script pays once), then
HESSEXT_BENCH_STEADY (default 3) more calls. Reported: the median first call over the
processes, the median steady call over all later calls, and the peak resident memory of the
first call (VmHWM above the resident set before it, /proc/self/status) over the result's
size (8·P² bytes; for (c) the Hessian's).

The floor, measured in its own fresh processes in the same run (median over them), is what
the machine needs at the least:
  flops   the GGN's rank-N·C product of the P×P matrix (N·C·P² useful flops) by the fastest
          BLAS here: scipy's OpenBLAS syrk (ssyrk / dsyrk at the row's precision) and torch's
          GEMM of the same factors, the faster of the two, into a buffer already touched;
  write   writing the 8·P² bytes of the float64 result into fresh memory: the fastest of a
          plain first write (numpy), torch's parallel fill and madvise(MADV_POPULATE_WRITE);
  (c) also: LAPACK's Cholesky of the P×P matrix (dpotrf), the triangular solves for the 50
          test gradients and the [n, P] × [P, 50] product of the scores.
The forward + backward pass over the data (one torch forward and backward of the summed loss) is
given beside it: every exact method needs at least one, and for the CNN it is what binds.

The peers, for the Hessian rows at the row's precision (their result is at the model's dtype,
4·P² bytes at float32), each in HESSEXT_BENCH_PEER_FRESH (default 2) fresh processes: a first
call and one more, the same columns as hessext's:
  torch.func        vmap of jvp(grad(L)) over 256 basis vectors at a time, the computation of
                    torch.func.jacfwd(torch.func.jacrev(L), chunk_size=256) (torch.func.hessian
                    itself takes all P at once: for (a) some 30 GB);
  autograd.functional.hessian   its default (vectorize=False) path: one backward of the gradient
                    per row, reverse-over-reverse;
  curvlinops        HessianLinearOperator(..., check_deterministic=False) @ I, 256 columns per
                    product.
A peer that would take longer than HESSEXT_BENCH_LIMIT_S (default 15) seconds is stopped there and
its time extrapolated from the columns done (first call: its first chunk, with the one-time costs,
plus the rest at the later chunks' rate; marked "est."); its peak memory is then not given.

Run:  python bench/bench_exact_curvature.py          (prints one markdown table)
HESSEXT_BENCH_ROWS=a32,b32 picks rows (a32, a64, ag32, b32, b64, c); HESSEXT_BENCH_THREADS sets
torch's threads in the workers (default: torch's own). No assertions: benchmarks are not tests.
"""

from __future__ import annotations

import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

FRESH = int(os.environ.get("HESSEXT_BENCH_FRESH", "3"))
STEADY = int(os.environ.get("HESSEXT_BENCH_STEADY", "3"))
THREADS = os.environ.get("HESSEXT_BENCH_THREADS")
PEER_FRESH = int(os.environ.get("HESSEXT_BENCH_PEER_FRESH", "2"))
LIMIT_S = float(os.environ.get("HESSEXT_BENCH_LIMIT_S", "15"))
PEERS = ("torch.func", "autograd.functional.hessian", "curvlinops")

ROWS = {
    "a32": ("(a) MLP 2-100-100-3 ReLU, hessian", "a", "hessian", "float32"),
    "a64": ("(a) MLP 2-100-100-3 ReLU, hessian", "a", "hessian", "float64"),
    "ag32": ("(a) MLP 2-100-100-3 ReLU, ggn", "a", "ggn", "float32"),
    "b32": ("(b) toolbox CNN, hessian", "b", "hessian", "float32"),
    "b64": ("(b) toolbox CNN, hessian", "b", "hessian", "float64"),
    "c": ("(c) influence end to end", "c", "influence", "float64"),
}


# ------------------------------------------------------------------------------ the problems


def make_problem(case, workdir):
    """(model, train (x, y), test or None, damping, C): deterministic for each case."""
    import torch

    if case == "a":
        from bench_hessian import make_case

        model, x, y = make_case("a", torch.float32)
        return model, (x, y), None, 0.0, 3
    if case == "b":
        from hessext.models import Conv1DToolbox

        g = torch.Generator().manual_seed(0)
        model = Conv1DToolbox(seed=0).eval()
        x = torch.rand(1000, 1, 924, generator=g)
        y = torch.randint(0, 2, (1000,), generator=g)
        return model, (x, y), None, 0.0, 2
    state = torch.load(Path(workdir) / "influence.pt")
    from bench_toolbox import make_model

    model = make_model()
    model.load_state_dict(state["model"])
    return model, state["train"], state["test"], state["damping"], 2


def prepare_influence(workdir):
    """Train bench_toolbox's model once (untimed) and choose its damping above |λ_min|."""
    import torch
    from bench_toolbox import make_problem as toolbox_problem

    import hessext

    model, train, test = toolbox_problem()
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    lam_min = hessext.hessian(model, ce, train, progress=False).lambda_min()
    damping = max(0.01, 1.1 * -lam_min)
    torch.save(
        {"model": model.state_dict(), "train": train, "test": test, "damping": damping},
        Path(workdir) / "influence.pt",
    )


# ------------------------------------------------------------------------------ workers


def _status_bytes(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def worker(row, workdir):
    """One fresh process: the first call and STEADY more; prints JSON."""
    import torch

    if THREADS:
        torch.set_num_threads(int(THREADS))
    import hessext

    _, case, kind, dtype_name = ROWS[row]
    model, train, test, damping, _ = make_problem(case, workdir)
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    dtype = getattr(torch, dtype_name)

    def call():
        if kind == "influence":
            return hessext.influence(model, ce, train, test, damping=damping, progress=False)
        fn = hessext.hessian if kind == "hessian" else hessext.ggn
        return fn(model, ce, train, dtype=dtype, progress=False)

    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts here
    before = _status_bytes("VmRSS")
    t = time.perf_counter()
    out = call()
    first = time.perf_counter() - t
    peak = _status_bytes("VmHWM") - before
    del out
    steady = []
    for _ in range(STEADY):
        t = time.perf_counter()
        out = call()
        steady.append(time.perf_counter() - t)
        del out
    P = sum(p.numel() for p in model.parameters())
    print(json.dumps({"first": first, "steady": steady, "peak": peak, "result": 8 * P * P, "P": P}))


def _peer_columns(peer, model, x, y):
    """(P, dtype, columns(s, e) -> the Hessian's columns s:e as a [P, e - s] tensor) for a peer."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, jvp, vmap

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    P, dtype = theta.numel(), theta.dtype

    def L(th):
        d, o = {}, 0
        for n_, sh in zip(names, shapes):
            d[n_] = th[o : o + sh.numel()].view(sh)
            o += sh.numel()
        return F.cross_entropy(functional_call(model, d, (x,)), y)

    def basis(s, e):
        E = torch.zeros(P, e - s, dtype=dtype)
        E[s:e].diagonal().fill_(1)
        return E

    if peer == "torch.func":
        return P, dtype, lambda s, e: vmap(lambda v: jvp(grad(L), (theta,), (v,))[1])(basis(s, e).T).T
    if peer == "autograd.functional.hessian":
        state = {}

        def rows(s, e):  # what torch.autograd.functional.hessian(L, theta) does, row by row
            if "g" not in state:
                th = theta.clone().requires_grad_(True)
                state["th"] = th
                state["g"] = torch.autograd.grad(L(th), th, create_graph=True)[0]
            th, g = state["th"], state["g"]
            return torch.stack([torch.autograd.grad(g[i], th, retain_graph=True)[0] for i in range(s, e)], 1)

        return P, dtype, rows
    from curvlinops import HessianLinearOperator

    Hop = HessianLinearOperator(
        model, torch.nn.CrossEntropyLoss(), list(model.parameters()), [(x, y)], check_deterministic=False
    )
    return P, dtype, lambda s, e: Hop @ basis(s, e)


def peer_worker(row, peer, workdir):
    """One fresh process: a peer's first call and one more (stopped at LIMIT_S, extrapolated)."""
    import torch

    if THREADS:
        torch.set_num_threads(int(THREADS))
    _, case, _, dtype_name = ROWS[row]
    model, (x, y), _, _, _ = make_problem(case, workdir)
    model = model.to(getattr(torch, dtype_name))
    x = x.to(getattr(torch, dtype_name))
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_bytes("VmRSS")

    def call():
        t0 = time.perf_counter()
        P, dtype, columns = _peer_columns(peer, model, x, y)
        step = 256 if peer != "autograd.functional.hessian" else 64
        H = torch.empty(P, P, dtype=dtype)
        first_chunk, done = None, 0
        while done < P:
            e = min(P, done + step)
            H[:, done:e] = columns(done, e)
            done = e
            if first_chunk is None:
                first_chunk = time.perf_counter() - t0
            if time.perf_counter() - t0 > LIMIT_S:
                break
        total = time.perf_counter() - t0
        if done < P:  # the rest at the rate of the chunks after the first
            if done > step:
                total = first_chunk + (total - first_chunk) / (done - step) * (P - step)
            else:
                total = first_chunk * P / done
        return total, done < P, 8 * P * P if dtype == torch.float64 else 4 * P * P

    first, estimated, result = call()
    peak = _status_bytes("VmHWM") - before
    steady, steady_est, _ = call()
    print(
        json.dumps(
            {
                "first": first,
                "steady": [steady],
                "estimated": estimated or steady_est,
                "peak": None if estimated else peak,
                "result": result,
            }
        )
    )


def _first_touch_seconds(nbytes):
    """The fastest of three ways of writing nbytes of fresh memory (each on its own buffer)."""
    import ctypes

    import numpy as np
    import torch

    times = {}
    t = time.perf_counter()
    a = np.empty(nbytes // 8)
    a.fill(1.0)
    times["numpy write"] = time.perf_counter() - t
    del a
    t = time.perf_counter()
    b = torch.empty(nbytes // 8, dtype=torch.float64)
    b.fill_(1.0)
    times["torch fill"] = time.perf_counter() - t
    del b
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    t = time.perf_counter()
    m = mmap.mmap(-1, nbytes)
    view = torch.frombuffer(m, dtype=torch.uint8)
    if libc.madvise(view.data_ptr(), nbytes, 23) == 0:  # MADV_POPULATE_WRITE
        times["populate"] = time.perf_counter() - t
    del view
    m.close()
    return min(times.values()), min(times, key=times.get)


def _best(fn, repeat=3):
    fn()  # the BLAS's own first-call work (thread pool) is not the floor's
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def floor(row, workdir):
    """One fresh process: the floor's terms for the row (seconds); prints JSON."""
    import numpy as np
    import scipy.linalg.blas as blas
    import scipy.linalg.lapack as lapack
    import torch

    if THREADS:
        torch.set_num_threads(int(THREADS))
    _, case, kind, dtype_name = ROWS[row]
    model, train, test, damping, C = make_problem(case, workdir)
    x, y = train
    N, P = x.shape[0], sum(p.numel() for p in model.parameters())
    terms = {}
    write, how = _first_touch_seconds(8 * P * P)
    terms["write"] = write
    # the rank-N·C product, at the row's precision (influence: hessext's default float64)
    np_dtype = np.float32 if dtype_name == "float32" else np.float64
    F = np.asfortranarray(np.random.default_rng(0).standard_normal((P, N * C)).astype(np_dtype))
    syrk = blas.ssyrk if np_dtype == np.float32 else blas.dsyrk
    out = np.zeros((P, P), dtype=np_dtype, order="F")
    t_syrk = _best(lambda c=out: syrk(1.0, F, beta=0.0, c=c, overwrite_c=1))
    del out
    Ft = torch.from_numpy(np.ascontiguousarray(F.T))
    out_t = torch.zeros(P, P, dtype=Ft.dtype)
    t_gemm = _best(lambda c=out_t: torch.mm(Ft.T, Ft, out=c))
    del out_t
    terms["flops"] = min(t_syrk, t_gemm)
    if kind == "influence":
        # a symmetric positive definite P×P matrix (the factorisation's time does not depend on it)
        R = np.random.default_rng(2).standard_normal((P, P))
        H = np.asfortranarray((R + R.T) / 2 + 2 * np.sqrt(P) * np.eye(P))
        del R
        work = np.empty_like(H, order="F")

        def chol():
            work[:] = H
            lapack.dpotrf(work, lower=1, overwrite_a=1, clean=0)

        t_copy = _best(lambda: work.__setitem__(slice(None), H))
        terms["cholesky"] = max(0.0, _best(chol) - t_copy)
        L = lapack.dpotrf(H, lower=1)[0]
        B = np.asfortranarray(np.random.default_rng(1).standard_normal((P, test[0].shape[0])))
        terms["solves"] = _best(lambda: lapack.dpotrs(L, B, lower=1))
        G = torch.randn(N, P, dtype=torch.float64)
        S = torch.randn(P, test[0].shape[0], dtype=torch.float64)
        terms["scores"] = _best(lambda: G @ S)
    # the forward + backward pass over the data (given beside the floor)
    params = [p for p in model.parameters()]

    def fwd_bwd():
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="sum")
        torch.autograd.grad(loss, params)

    fb = _best(fwd_bwd)
    print(json.dumps({"terms": terms, "write_how": how, "fwd_bwd": fb, "P": P, "N": N, "C": C}))


# ------------------------------------------------------------------------------ driver


def _run(args, timeout=1200):
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    rows = [r.strip() for r in os.environ.get("HESSEXT_BENCH_ROWS", ",".join(ROWS)).split(",") if r.strip()]
    print(f"Exact curvature, first call / steady state / floor; {describe()}")
    print(
        f"{FRESH} fresh processes per row, {STEADY} steady calls each; "
        f"threads: {THREADS or 'torch default'}\n"
    )
    with tempfile.TemporaryDirectory() as workdir:
        if "c" in rows:
            subprocess.run([sys.executable, __file__, "--prepare", workdir], check=True)
        results = {r: {"runs": [], "floors": []} for r in rows}
        # rounds: every row once per round, so that the machine's load falls on all of them
        for _ in range(FRESH):
            for r in rows:
                try:
                    results[r]["runs"].append(_run(["--worker", r, workdir]))
                    results[r]["floors"].append(_run(["--floor", r, workdir]))
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    results[r]["error"] = str(err)[:100]
        peers = {}
        for _ in range(PEER_FRESH):
            for r in rows:
                if ROWS[r][2] != "hessian":
                    continue
                for peer in PEERS:
                    res = peers.setdefault((r, peer), {"runs": []})
                    try:
                        res["runs"].append(_run(["--peer", r, peer, workdir]))
                    except (RuntimeError, subprocess.TimeoutExpired) as err:
                        res["error"] = str(err)[:100]
    print(
        "| row | dtype | P | first call (s) | steady (s) | floor (s) | first / floor | "
        "steady / floor | peak / result | floor terms (s) | fwd+bwd (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    summary = {}
    for r in rows:
        name, _, _, dtype_name = ROWS[r]
        res = results[r]
        if not res["runs"] or not res["floors"]:
            print(f"| {name} | {dtype_name} | | failed: {res.get('error', '?')} | | | | | | | |")
            continue
        first = statistics.median(run["first"] for run in res["runs"])
        steady = statistics.median(t for run in res["runs"] for t in run["steady"])
        peak = statistics.median(run["peak"] / run["result"] for run in res["runs"])
        peak_mb = statistics.median(run["peak"] for run in res["runs"]) / 2**20
        terms = {
            k: statistics.median(f["terms"][k] for f in res["floors"]) for k in res["floors"][0]["terms"]
        }
        fl = sum(terms.values())
        fb = statistics.median(f["fwd_bwd"] for f in res["floors"])
        shown = ", ".join(f"{k} {v:.3f}" for k, v in terms.items())
        summary[r] = {"first": first, "floor": fl}
        print(
            f"| {name} | {dtype_name} | {res['runs'][0]['P']:,} | {first:.2f} | {steady:.2f} | "
            f"{fl:.3f} | {first / fl:.2f} | {steady / fl:.2f} | {peak:.2f} ({peak_mb:.0f} MB) | "
            f"{shown} | {fb:.3f} |",
            flush=True,
        )
    print("\nPeers (same run; the floor is the row's above):\n")
    print(
        "| row | dtype | tool | first call (s) | steady (s) | first / floor | "
        "hessext first / peer first | peak / result |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for (r, peer), res in peers.items():
        name, _, _, dtype_name = ROWS[r]
        if not res["runs"] or not results[r]["runs"] or not results[r]["floors"]:
            print(f"| {name} | {dtype_name} | {peer} | failed: {res.get('error', '?')} | | | | |")
            continue
        first = statistics.median(run["first"] for run in res["runs"])
        steady = statistics.median(t for run in res["runs"] for t in run["steady"])
        est = " est." if any(run["estimated"] for run in res["runs"]) else ""
        peaks = [run["peak"] / run["result"] for run in res["runs"] if run["peak"] is not None]
        peak = f"{statistics.median(peaks):.2f}" if peaks else "not run to the end"
        fl = summary[r]["floor"]
        print(
            f"| {name} | {dtype_name} | {peer} | {first:.2f}{est} | {steady:.2f}{est} | {first / fl:.1f} | "
            f"{summary[r]['first'] / first:.3f} | {peak} |",
            flush=True,
        )
    print(f"\nload average at the end: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "--floor":
        floor(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "--peer":
        peer_worker(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "--prepare":
        prepare_influence(sys.argv[2])
    else:
        main()
