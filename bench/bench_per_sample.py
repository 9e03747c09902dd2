"""Per-sample gradients: hessext against the tools people use, in the same run.

Problems: (a) MLP 784-256-256-10, N = 256; (b) CNN on 1×28×28 (Conv2d(1,16,3)-ReLU-MaxPool2-
Conv2d(16,32,3)-ReLU-MaxPool2-Linear(800,10)), N = 256; (c) the toolbox's 740-parameter 1-D
CNN on 1000 random inputs of length 924. Methods: hessext.per_sample_grads (the N×P matrix),
torch.func vmap(grad), BackPACK BatchGrad, Opacus GradSampleModule. The peers return one
[N, *shape] tensor per parameter; their time does NOT include concatenating those into N×P
(the user might not need it), while hessext's includes writing the N×P matrix.

Ghost products (lazy PerSampleGrads, docs/methods.md §1): G @ V with M = 50 and the Gram matrix G Gᵀ,
against materialise-then-multiply from the same captured object (product cost only), on (a),
(b), and a wider MLP (784-1024-1024-10) that shows the ghost memory does not grow with P.

Peak memory: the peak resident set size during one call above what was resident before it
(Linux: /proc/self/clear_refs resets the peak), in MiB, measured in a fresh worker process per
method in which glibc returns every freed block >= 64 KiB to the system (otherwise freed buffers
stay resident and a call's peak undercounts what it allocates).

Times: best of HESSEXT_BENCH_REPEAT calls after a warm-up, each method in a fresh worker process
of its own with glibc's default allocation behaviour, as a user's process has it; the methods
take turns, HESSEXT_BENCH_ROUNDS (default 3) rounds, best over rounds. One process per method
because a call's time depends on the allocator's state: whether its large buffers come from
memory already mapped or are page-faulted afresh. Timed in one process, the methods change that
state for each other (the 28x28 CNN measured 1.22-1.83x for hessext over torch.func depending
on which methods had run before it in the process), and the fixed 64 KiB mmap threshold of the
peak workers page-faults every large buffer on every call (it doubled torch.func's time; the
README before 2026-11-25 afternoon was measured that way).

Reference row "forward + input backward": one forward pass and one backward pass to the inputs
only (no parameter gradients at all): the part every method shares, the floor below which no
per-sample method can go without its own forward/backward kernels.

Run:  python -m pytest bench/bench_per_sample.py --benchmark-only   (pytest-benchmark)
      python bench/bench_per_sample.py                              (markdown table)
HESSEXT_BENCH_REPEAT (default 5) sets the timed calls per process, HESSEXT_BENCH_ROUNDS (default
3) the processes per method; HESSEXT_BENCH_QUICK=1 divides N by 4;
HESSEXT_BENCH_PROBLEMS (comma-separated: mlp, cnn, toolbox_cnn, wide_mlp) runs only those;
HESSEXT_BENCH_THREADS sets torch's thread count (1 gives steadier ratios on a loaded machine).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import hessext
from hessext import testing as cases

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/'s own helpers, also under pytest
from _machine import describe  # noqa: E402

REPEAT = int(os.environ.get("HESSEXT_BENCH_REPEAT", "5"))
ROUNDS = int(os.environ.get("HESSEXT_BENCH_ROUNDS", "3"))
if os.environ.get("HESSEXT_BENCH_THREADS"):
    # On a shared, oversubscribed machine every parallel region waits for a descheduled worker;
    # one thread then measures the work itself.
    torch.set_num_threads(int(os.environ["HESSEXT_BENCH_THREADS"]))


def _fixed_malloc_thresholds():
    """Make glibc return every freed block >= 64 KiB to the system and stop raising the mmap
    threshold after frees; otherwise freed buffers stay resident and a later call's peak RSS
    undercounts what it allocates. Only in the memory workers: it changes timings."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


QUICK = os.environ.get("HESSEXT_BENCH_QUICK", "") == "1"
CE_NONE = nn.CrossEntropyLoss(reduction="none")


# ---- problems ---------------------------------------------------------------------------------


def problem(name):
    torch.manual_seed(0)
    scale = 4 if QUICK else 1
    if name == "mlp":
        model, x = cases.bench_mlp(), torch.randn(256 // scale, 784)
        classes = 10
    elif name == "cnn":
        model, x = cases.bench_cnn(), torch.randn(256 // scale, 1, 28, 28)
        classes = 10
    elif name == "toolbox_cnn":
        model, x = hessext.models.Conv1DToolbox(), torch.rand(1000 // scale, 1, 924)
        classes = 2
    elif name == "wide_mlp":
        model, x = cases.mlp((784, 1024, 1024, 10), act=nn.ReLU), torch.randn(256 // scale, 784)
        classes = 10
    else:
        raise KeyError(name)
    return model.eval(), x, torch.randint(0, classes, (x.shape[0],))


PROBLEMS = ["mlp", "cnn", "toolbox_cnn"]
GHOST_PROBLEMS = ["mlp", "cnn", "wide_mlp"]
if os.environ.get("HESSEXT_BENCH_PROBLEMS"):  # e.g. "cnn" or "cnn,wide_mlp"
    _only = os.environ["HESSEXT_BENCH_PROBLEMS"].split(",")
    PROBLEMS = [p for p in PROBLEMS if p in _only]
    GHOST_PROBLEMS = [p for p in GHOST_PROBLEMS if p in _only]


# ---- methods: each returns a callable computing per-sample gradients once ----------------------


def m_hessext(model, x, y):
    return lambda: hessext.per_sample_grads(model, CE_NONE, x, y)


def m_hessext_out(model, x, y):
    """Repeated calls writing into one preallocated N×P matrix (the ``out=`` argument)."""
    P = sum(p.numel() for p in model.parameters())
    out = torch.empty(x.shape[0], P)
    return lambda: hessext.per_sample_grads(model, CE_NONE, x, y, out=out)


def m_torch_func(model, x, y):
    theta = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(t, xi, yi):
        return CE_NONE(torch.func.functional_call(model, t, (xi.unsqueeze(0),)), yi.unsqueeze(0)).sum()

    g = torch.func.vmap(torch.func.grad(loss_one), in_dims=(None, 0, 0))
    return lambda: g(theta, x, y)


def m_backpack(model, x, y):
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    net = extend(copy.deepcopy(model))
    loss_fn = extend(nn.CrossEntropyLoss(reduction="sum"))  # sum: grad_batch is ∇ℓ_i exactly

    def run():
        net.zero_grad(set_to_none=True)
        with backpack(BatchGrad()):
            loss_fn(net(x), y).backward()
        return [p.grad_batch for p in net.parameters()]

    return run


def m_opacus(model, x, y):
    from opacus import GradSampleModule

    net = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    # Opacus captures activations only in training mode; dropout stays off, as for the others
    net.train()
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")

    def run():
        net.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        return [p.grad_sample for p in net.parameters()]

    return run


def m_shared_floor(model, x, y):
    """Reference, not a method: forward + backward to the inputs only (no parameter gradients)."""
    x = x.clone().requires_grad_(True)
    return lambda: torch.autograd.grad(CE_NONE(model(x), y).sum(), x)


FLOOR = "forward + input backward (reference)"
METHODS = {
    "hessext": m_hessext,
    "hessext, out= reused": m_hessext_out,
    "torch.func": m_torch_func,
    "BackPACK": m_backpack,
    "Opacus": m_opacus,
    FLOOR: m_shared_floor,
}


def available(method):
    try:
        if method == "BackPACK":
            import backpack  # noqa: F401
        elif method == "Opacus":
            import opacus  # noqa: F401
    except Exception:  # not installed (or broken beside this torch)
        return False
    return True


# ---- ghost products ---------------------------------------------------------------------------


def ghost_callables(name):
    model, x, y = problem(name)
    G = hessext.PerSampleGrads(model, CE_NONE, x, y)
    torch.manual_seed(1)
    V = torch.randn(G.shape[1], 50)
    return {
        "G@V ghost": lambda: G @ V,
        "G@V materialise": lambda: G.materialize() @ V,
        "Gram ghost": lambda: G.gram(),
        "Gram materialise": lambda: (lambda M: M @ M.T)(G.materialize()),
    }, G


# ---- measuring --------------------------------------------------------------------------------


def _status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def peak_mib(fn) -> float:
    """Extra peak resident memory of one call of fn, in MiB (nan where unsupported)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return float("nan")
    before = _status_kib("VmRSS")
    out = fn()
    peak = _status_kib("VmHWM")
    del out
    return max(0.0, (peak - before) / 1024)


def _worker(measure, kind, name, what):
    """Runs in a fresh process: one warm-up call, then ``peak`` (the peak of one call, under the
    fixed thresholds) or ``time`` (the best of REPEAT calls, default allocator)."""
    if measure == "peak":
        _fixed_malloc_thresholds()
    if kind == "ghost":
        fn = ghost_callables(name)[0][what]
    else:
        fn = METHODS[what](*problem(name))
    fn()
    if measure == "peak":
        print(peak_mib(fn))
        return
    best = float("inf")
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    print(best)


def in_worker(measure, kind, name, what) -> float:
    """One measurement ("peak" in MiB or "time" in s) in a fresh process (module docstring)."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", measure, kind, name, what],
        capture_output=True,
        text=True,
    )
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return float("nan")


def times_in_workers(kind, name, whats) -> dict:
    """Best time of each method over ROUNDS fresh processes; the methods take turns, so that
    load changes on a shared machine hit all of them alike."""
    runs = {w: [] for w in whats}
    for _ in range(ROUNDS):
        for w in whats:
            runs[w].append(in_worker("time", kind, name, w))
    # a worker that failed gives nan; a method all of whose workers failed stays nan
    return {w: min((t for t in ts if t == t), default=float("nan")) for w, ts in runs.items()}


# ---- pytest-benchmark -------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # plain-script use without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("method", list(METHODS))
    @pytest.mark.parametrize("name", PROBLEMS)
    def test_per_sample_grads(benchmark, name, method):
        if not available(method):
            pytest.skip(f"{method} not installed")
        model, x, y = problem(name)
        fn = METHODS[method](model, x, y)
        benchmark.extra_info["peak_mib"] = in_worker("peak", "method", name, method)
        benchmark.extra_info["N"] = x.shape[0]
        benchmark.pedantic(fn, rounds=REPEAT, warmup_rounds=1)

    @pytest.mark.parametrize("product", ["G@V ghost", "G@V materialise", "Gram ghost", "Gram materialise"])
    @pytest.mark.parametrize("name", GHOST_PROBLEMS)
    def test_ghost_products(benchmark, name, product):
        fns, G = ghost_callables(name)
        benchmark.extra_info["peak_mib"] = in_worker("peak", "ghost", name, product)
        benchmark.extra_info["P"] = G.shape[1]
        benchmark.pedantic(fns[product], rounds=REPEAT, warmup_rounds=1)


# ---- plain script: markdown tables ------------------------------------------------------------


def main():
    print(
        f"torch {torch.__version__}, hessext {hessext.__version__} "
        f"(compiled core: {hessext.info()['compiled_core']}), {torch.get_num_threads()} threads, "
        f"{describe()}; best of {REPEAT} calls in each of "
        f"{ROUNDS} fresh processes per method\n"
    )
    print("| problem | N | P | method | time (ms) | peak extra memory (MiB) | time / hessext |")
    print("|---|---|---|---|---|---|---|")
    for name in PROBLEMS:
        model, x, y = problem(name)
        P = sum(p.numel() for p in model.parameters())
        methods = [method for method in METHODS if available(method)]
        times = times_in_workers("method", name, methods)
        mems = {method: in_worker("peak", "method", name, method) for method in methods}
        rows = {method: (times[method], mems[method]) for method in methods}
        base = rows["hessext"][0]
        for method, (t, mem) in rows.items():
            print(f"| {name} | {x.shape[0]} | {P} | {method} | {1e3 * t:.1f} | {mem:.0f} | {t / base:.2f} |")
    print("\n| problem | P | product | time (ms) | peak extra memory (MiB) | materialise / ghost |")
    print("|---|---|---|---|---|---|")
    for name in GHOST_PROBLEMS:
        fns, G = ghost_callables(name)
        times = times_in_workers("ghost", name, list(fns))
        mems = {k: in_worker("peak", "ghost", name, k) for k in fns}
        res = {k: (times[k], mems[k]) for k in fns}
        for kind in ("G@V", "Gram"):
            tg, mg = res[f"{kind} ghost"]
            tm, mm = res[f"{kind} materialise"]
            print(f"| {name} | {G.shape[1]} | {kind} ghost | {1e3 * tg:.1f} | {mg:.0f} | {tm / tg:.2f} |")
            print(f"| {name} | {G.shape[1]} | {kind} materialise | {1e3 * tm:.1f} | {mm:.0f} | |")
    print(f"\nload average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:])
    else:
        main()
