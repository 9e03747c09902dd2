"""Influence functions end to end from a trained model: hessext vs the tools users would pick.

Problem (issue 4): MLP 20-50-50-2 (tanh, P = 3,702), cross-entropy, n_train = 2000,
n_test = 50; IF = (1/n) G_train (H + δI)⁻¹ G_testᵀ for all pairs, δ chosen above |λ_min|.
Every method starts from the trained model and returns the [2000, 50] matrix:

* hessext        hessext.influence (exact float64 Hessian assembly, Cholesky, ghost products)
                 ("float32 products": the Hessian's products at the model's float32, summed in
                 float64, as the peers' float32 Hessians are computed)
* torch.func     Hessian by jacrev of the gradient (chunked) + Cholesky + vmap per-sample grads
* curvlinops     HessianLinearOperator applied to the identity + Cholesky + vmap grads
* CG (HVP)       conjugate gradients per test point, double-backward Hessian-vector products
* LiSSA          Agarwal et al. / Koh & Liang's stochastic recursion (batched over test points)

plus RUE (B = 50) and the extrapolation score (hessext) on the same model. Each method runs in
its own subprocess so that its peak resident memory (ru_maxrss growth over the loaded problem)
is its own. Deviation: max |IF - IF_ref| / max |IF_ref| against a float64 torch.func reference.

Run: python bench/bench_toolbox.py          (HESSEXT_BENCH_SMALL=1: n_train = 400, quick;
HESSEXT_BENCH_ONLY="hessext;torch.func": only those rows; HESSEXT_BENCH_TIMEOUT: s per row)
No assertions on time; the printed markdown table is the result. Also collected by pytest
(pytest-benchmark) as test_bench_* at the small size.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

SMALL = os.environ.get("HESSEXT_BENCH_SMALL", "0") == "1"
N_TRAIN = 400 if SMALL else 2000
N_TEST = 50
SEED = 0


# ------------------------------------------------------------------------------ the problem


def make_model():
    return nn.Sequential(nn.Linear(20, 50), nn.Tanh(), nn.Linear(50, 50), nn.Tanh(), nn.Linear(50, 2))


def make_problem():
    """A trained float32 model and its data (deterministic for the seed)."""
    g = torch.Generator().manual_seed(SEED)
    X = torch.randn(N_TRAIN + N_TEST, 20, generator=g)
    teacher = torch.randn(20, generator=g)
    y = ((X @ teacher + 0.5 * torch.randn(N_TRAIN + N_TEST, generator=g)) > 0).long()
    torch.manual_seed(SEED)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[:N_TRAIN]), y[:N_TRAIN]).backward()
        opt.step()
    return model, (X[:N_TRAIN], y[:N_TRAIN]), (X[N_TRAIN:], y[N_TRAIN:])


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflat(model, theta):
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = theta[i : i + p.numel()].reshape(p.shape)
        i += p.numel()
    return out


def mean_loss_fn(model, X, y):
    return lambda theta: nn.functional.cross_entropy(functional_call(model, unflat(model, theta), (X,)), y)


def vmap_grads(model, X, y):
    """[N, P] per-sample gradients by torch.func (the peers' way)."""
    theta = flat(model).to(X.dtype)
    one = lambda th, x, t: nn.functional.cross_entropy(
        functional_call(model, unflat(model, th), (x[None],)), t[None]
    )
    return vmap(grad(one), in_dims=(None, 0, 0))(theta, X, y)


def reference_parts(model, train, test):
    """float64 torch.func Hessian, eigenvalues and gradients: the deviation reference (not timed)."""
    m64 = make_model().double()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    X, y = train[0].double(), train[1]
    H = jacrev(grad(mean_loss_fn(m64, X, y)), chunk_size=512)(flat(m64))
    H = 0.5 * (H + H.T)
    return H, torch.linalg.eigvalsh(H), vmap_grads(m64, X, y), vmap_grads(m64, test[0].double(), test[1])


def reference_influence(parts, damping):
    H, _, G, Gt = parts
    A = H + damping * torch.eye(H.shape[0], dtype=torch.float64)
    return G @ torch.cholesky_solve(Gt.T, torch.linalg.cholesky(A)) / G.shape[0]


# ------------------------------------------------------------------------------ the methods


def run_hessext(model, train, test, damping, hessian=None):
    import hessext

    return hessext.influence(
        model,
        nn.CrossEntropyLoss(reduction="none"),
        train,
        test,
        hessian=hessian,
        damping=damping,
        progress=False,
    )


def run_hessext_fp32_products(model, train, test, damping):
    """hessext end to end with the Hessian's products at the model's float32 (accumulation in
    float64 all the same): the precision the peers' Hessians have."""
    import hessext

    ce = nn.CrossEntropyLoss(reduction="none")
    H = hessext.hessian(model, ce, train, dtype=torch.float32, progress=False)
    return hessext.influence(model, ce, train, test, hessian=H, damping=damping, progress=False)


def prepare_hessian(model, train):
    """Untimed preparation of the rows that reuse one Hessian (the toolbox's intended use)."""
    import hessext

    return hessext.hessian(model, nn.CrossEntropyLoss(reduction="none"), train, progress=False)


def _cholesky_influence(H, model, train, test, damping):
    A = H.to(torch.float64) + damping * torch.eye(H.shape[0], dtype=torch.float64)
    L = torch.linalg.cholesky(A)
    S = torch.cholesky_solve(vmap_grads(model, *test).T.double(), L)
    return vmap_grads(model, *train).double() @ S / train[0].shape[0]


def run_torch_func(model, train, test, damping):
    theta = flat(model)
    H = jacrev(grad(mean_loss_fn(model, *train)), chunk_size=256)(theta)
    return _cholesky_influence(0.5 * (H + H.T), model, train, test, damping)


def run_curvlinops(model, train, test, damping):
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters()]
    op = HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [train], check_deterministic=False)
    P = sum(p.numel() for p in params)
    H = op @ torch.eye(P)
    H = torch.as_tensor(H)
    return _cholesky_influence(0.5 * (H + H.T), model, train, test, damping)


def _hvp_closure(model, train):
    params = list(model.parameters())
    loss = nn.functional.cross_entropy(model(train[0]), train[1])
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])

    def hvp(v):
        hv = torch.autograd.grad(flat_grad, params, grad_outputs=v, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv])

    return hvp


def run_cg(model, train, test, damping, tol=1e-6, max_iter=300):
    hvp = _hvp_closure(model, train)
    Gt = vmap_grads(model, *test)
    S = torch.empty(Gt.shape[1], Gt.shape[0], dtype=torch.float64)
    for j in range(Gt.shape[0]):  # one CG solve per test point, as the classic implementations
        b = Gt[j]
        x = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rr = r @ r
        for _ in range(max_iter):
            Ap = hvp(p) + damping * p
            alpha = rr / (p @ Ap)
            x += alpha * p
            r -= alpha * Ap
            rr_new = r @ r
            if rr_new.sqrt() <= tol * b.norm():
                break
            p = r + (rr_new / rr) * p
            rr = rr_new
        S[:, j] = x.double()
    return vmap_grads(model, *train).double() @ S / train[0].shape[0]


def run_lissa(model, train, test, damping, depth=300, batch=200, seed=0):
    """h ← v + (1 - δ/s) h - H_batch h / s, H⁻¹v ≈ h/s (scale s ≥ λ_max by power iteration)."""
    theta = flat(model)
    X, y = train
    Gt = vmap_grads(model, *test)  # [m, P]

    def hvp_batch(xb, yb, V):  # V [k, P] → [k, P] forward-over-reverse
        g = grad(mean_loss_fn(model, xb, yb))
        return vmap(lambda v: torch.func.jvp(g, (theta,), (v,))[1])(V)

    v = torch.randn(1, theta.numel(), generator=torch.Generator().manual_seed(seed))
    for _ in range(20):
        v = hvp_batch(X, y, v / v.norm())
    scale = 1.2 * float(v.norm())
    gen = torch.Generator().manual_seed(seed)
    h = Gt.clone()
    for _ in range(depth):
        idx = torch.randint(X.shape[0], (batch,), generator=gen)
        h = Gt + (1 - damping / scale) * h - hvp_batch(X[idx], y[idx], h) / scale
    S = (h / scale).T.double()
    return vmap_grads(model, *train).double() @ S / X.shape[0]


def run_rue(model, train, test, damping, hessian=None):
    import hessext

    return hessext.rue(
        model,
        nn.CrossEntropyLoss(reduction="none"),
        train,
        test[0],
        hessian=hessian,
        n_bootstrap=50,
        damping=damping,
        progress=False,
    )


def run_extrapolation(model, train, test, damping, hessian=None):
    import hessext

    return hessext.extrapolation_score(model, test[0], hessian=hessian, threshold=0.01)


METHODS = {
    "hessext": run_hessext,
    "hessext, float32 products": run_hessext_fp32_products,
    "hessext, Hessian given": run_hessext,
    "torch.func": run_torch_func,
    "curvlinops": run_curvlinops,
    "CG (HVP)": run_cg,
    "LiSSA": run_lissa,
}
EXTRAS = {
    "hessext RUE (B=50), Hessian given": run_rue,
    "hessext extrapolation score (t=0.01), Hessian given": run_extrapolation,
}
CHILD_TIMEOUT_S = int(os.environ.get("HESSEXT_BENCH_TIMEOUT", "600"))
# semicolon-separated row names to run (default: all)
ONLY = [n.strip() for n in os.environ.get("HESSEXT_BENCH_ONLY", "").split(";") if n.strip()]


# ------------------------------------------------------------------------------ driver


def _peak_rss_kib():
    """This process's resident-memory high-water mark. VmHWM is reset by exec; ru_maxrss is not
    (on Linux it starts at the forking parent's size, which would hide the child's growth)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _file_name(name):
    return "".join(c if c.isalnum() else "_" for c in name) + ".pt"


def _child(name, workdir):
    state = torch.load(Path(workdir) / "problem.pt")
    model = make_model()
    model.load_state_dict(state["model"])
    train, test, damping = state["train"], state["test"], state["damping"]
    fn = {**METHODS, **EXTRAS}[name]
    kwargs = {"hessian": prepare_hessian(model, train)} if "Hessian given" in name else {}
    rss0 = _peak_rss_kib()
    start = time.perf_counter()
    out = fn(model, train, test, damping, **kwargs)
    seconds = time.perf_counter() - start
    rss1 = _peak_rss_kib()
    torch.save(
        {
            "out": out.detach().to(torch.float64).clone(),
            "seconds": seconds,
            "peak_mib": max(0, rss1 - rss0) / 1024,
        },
        Path(workdir) / _file_name(name),
    )


def main():
    torch.manual_seed(SEED)
    model, train, test = make_problem()
    t0 = time.perf_counter()
    parts = reference_parts(model, train, test)
    lam = parts[1]
    damping = max(0.01, 1.1 * float(-lam[0]))
    ref = reference_influence(parts, damping)
    print(
        f"\nInfluence, MLP 20-50-50-2 tanh (P = 3,702), n_train = {N_TRAIN}, n_test = {N_TEST}, "
        f"damping δ = {damping:.4g} (λ_min = {float(lam[0]):.4g}, λ_max = {float(lam[-1]):.4g}); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; float64 reference "
        f"{time.perf_counter() - t0:.0f} s; {describe()}\n",
        flush=True,
    )
    print("| method | time [s] | vs hessext | peak RSS growth [MiB] | max rel. deviation from float64 |")
    print("|---|---:|---:|---:|---:|", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        torch.save(
            {"model": model.state_dict(), "train": train, "test": test, "damping": damping},
            Path(workdir) / "problem.pt",
        )
        for name in [*METHODS, *EXTRAS]:
            if ONLY and name not in ONLY:
                continue
            try:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", name, workdir],
                    capture_output=True,
                    text=True,
                    timeout=CHILD_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired:
                print(f"| {name} | > {CHILD_TIMEOUT_S} (stopped) | | | |", flush=True)
                continue
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:100]
                print(f"| {name} | failed: {tail} | | | |", flush=True)
                continue
            res = torch.load(Path(workdir) / _file_name(name))
            dev = float((res["out"] - ref).abs().max() / ref.abs().max()) if name in METHODS else None
            rows[name] = (res["seconds"], dev)
            hx = rows.get("hessext", (None,))[0]
            ratio = f"{res['seconds'] / hx:.2f}×" if hx else ""
            devs = f"{dev:.1e}" if dev is not None else "–"
            print(f"| {name} | {res['seconds']:.2f} | {ratio} | {res['peak_mib']:.0f} | {devs} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


# ------------------------------------------------------------------------------ pytest-benchmark


def _small_problem():
    global N_TRAIN
    N_TRAIN = 400
    model, train, test = make_problem()
    return model, train, test


def test_bench_influence_hessext(benchmark):
    model, train, test = _small_problem()
    benchmark(run_hessext, model, train, test, 1.0)


def test_bench_influence_torch_func(benchmark):
    model, train, test = _small_problem()
    benchmark.pedantic(run_torch_func, args=(model, train, test, 1.0), rounds=1, iterations=1)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        main()
