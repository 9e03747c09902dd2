"""2-D Ising Monte Carlo speed: hessext.ising_sweeps against a vectorised torch checkerboard
Metropolis in the same run, and effective independent samples per second at T_c (Wolff vs
Metropolis).

Run: python bench/bench_ising.py             (or pytest bench/bench_ising.py -s)
     HESSEXT_BENCH_THREADS=1 ...             threads (default 2: the goal is stated for 2 cores)

Each measurement runs in a fresh interpreter (this file with --worker) so that the first call
and the peak memory (growth of ru_maxrss over the call) are its own. Reported per method: the
first call's wall seconds, the steady-state median of the repeats (wall and CPU seconds: CPU is
the better measure on a loaded machine), spin updates per second and the ratio to torch.

- torch checkerboard: the natural vectorised torch code, float32 spins, torch.rand uniforms,
  exp(-β ΔE) per site, torch.where per colour, over the whole batch at once.
- hessext metropolis: the compiled kernel (same batch, same sweeps; checkerboard order,
  Philox uniforms), the observables off.
- effective samples at T_c: chains at β_c, a pilot measures τ_int(|m|) in sweeps (observables
  on), then samples/s = chains · sweeps / (2 τ_int) / seconds; Wolff with 1/⟨m²⟩ clusters per
  sweep (one sweep flips about L² spins).
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

import torch

import hessext
from hessext.datasets.ising2d import integrated_autocorrelation_time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import describe  # noqa: E402

THREADS = int(os.environ.get("HESSEXT_BENCH_THREADS", "2"))
REPEATS = int(os.environ.get("HESSEXT_BENCH_REPEATS", "3"))
BETA_C = math.log(1 + math.sqrt(2)) / 2


def torch_checkerboard(spins: torch.Tensor, beta: float, n_sweeps: int, gen: torch.Generator) -> torch.Tensor:
    """Vectorised checkerboard Metropolis in plain torch: spins [B, L, L] float32 ±1."""
    L = spins.shape[-1]
    i = torch.arange(L).view(-1, 1)
    j = torch.arange(L).view(1, -1)
    colours = [((i + j) % 2 == c) for c in (0, 1)]
    s = spins
    for _ in range(n_sweeps):
        for mask in colours:
            h = s.roll(1, 1) + s.roll(-1, 1) + s.roll(1, 2) + s.roll(-1, 2)
            accept = torch.rand(s.shape, generator=gen) < torch.exp(-2.0 * beta * s * h)
            s = torch.where(mask & accept, -s, s)
    return s


def _timed(fn):
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # MiB
    return out, wall, cpu, peak


def worker(task: dict) -> dict:
    torch.set_num_threads(THREADS)
    B, L, sweeps = task["B"], task["L"], task["sweeps"]
    g = torch.Generator().manual_seed(0)
    start = (torch.randint(0, 2, (B, L, L), generator=g) * 2 - 1).to(torch.int8)
    result = {"method": task["method"], "B": B, "L": L, "sweeps": sweeps}
    if task["method"] == "torch checkerboard":
        s = start.float()
        run = lambda k: torch_checkerboard(s, BETA_C, sweeps, g)
    elif task["method"] == "hessext metropolis":
        run = lambda k: hessext.ising_sweeps(start, BETA_C, sweeps, seed=k)
    else:  # effective samples at T_c
        alg = task["algorithm"]
        s = hessext.ising_sweeps(start, BETA_C, 200, seed=1, algorithm="metropolis")
        _, m, _ = hessext.ising_sweeps(s, BETA_C, 100, seed=1, sweep_offset=200, observables=True)
        clusters = max(1, round(1 / float((m * m).mean()))) if alg == "wolff" else 1
        s = hessext.ising_sweeps(s, BETA_C, 200, seed=2, algorithm=alg, clusters_per_sweep=clusters)
        (s, m, _), wall, cpu, _ = _timed(
            lambda: hessext.ising_sweeps(
                s, BETA_C, sweeps, seed=3, algorithm=alg, clusters_per_sweep=clusters, observables=True
            )
        )
        tau = integrated_autocorrelation_time(m.abs().numpy())
        result.update(algorithm=alg, clusters_per_sweep=clusters, tau=tau, wall=wall, cpu=cpu)
        result["effective_per_s"] = B * sweeps / (2 * tau) / wall
        result["effective_per_cpu_s"] = B * sweeps / (2 * tau) / cpu
        return result
    _, first, first_cpu, peak = _timed(lambda: run(0))
    walls, cpus = [], []
    for k in range(REPEATS):
        _, w, c, _ = _timed(lambda k=k: run(k + 1))
        walls.append(w)
        cpus.append(c)
    result.update(
        first=first,
        wall=statistics.median(walls),
        cpu=statistics.median(cpus),
        peak_mib=peak,
        updates_per_s=B * L * L * sweeps / statistics.median(walls),
        updates_per_cpu_s=B * L * L * sweeps / statistics.median(cpus),
    )
    return result


def _fresh(task: dict) -> dict:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)],
        capture_output=True,
        text=True,
        check=True,
        cwd="/tmp",
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"# Ising Monte Carlo, {THREADS} threads; {describe()}")
    print("\n## spin updates per second (checkerboard Metropolis at β_c)\n")
    print(
        "| B × L² | method | first call s | steady wall s | steady CPU s | M updates/s | per CPU s | peak "
        "MiB | vs torch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for B, L, sweeps in ((64, 32, 20), (16, 128, 10)):
        rows = [
            _fresh({"method": m, "B": B, "L": L, "sweeps": sweeps})
            for m in ("torch checkerboard", "hessext metropolis")
        ]
        base = rows[0]["updates_per_s"]
        for r in rows:
            print(
                f"| {B} × {L}² | {r['method']} | {r['first']:.3f} | {r['wall']:.3f} | {r['cpu']:.3f} | "
                f"{r['updates_per_s'] / 1e6:.1f} | {r['updates_per_cpu_s'] / 1e6:.1f} | "
                f"{r['peak_mib']:.0f} | "
                f"{r['updates_per_s'] / base:.1f}x |"
            )
    print("\n## effective independent samples per second at T_c (|m|, 2 τ_int apart)\n")
    print("| L | algorithm | clusters/sweep | τ_int (sweeps) | wall s | samples/s | per CPU s |")
    print("|---|---|---|---|---|---|---|")
    for L, sweeps in ((32, 2000), (64, 1000)):
        for alg in ("metropolis", "wolff"):
            r = _fresh({"method": "effective", "algorithm": alg, "B": 16, "L": L, "sweeps": sweeps})
            print(
                f"| {L} | {alg} | {r['clusters_per_sweep']} | {r['tau']:.2f} | {r['wall']:.2f} | "
                f"{r['effective_per_s']:.0f} | {r['effective_per_cpu_s']:.0f} |"
            )
    print(f"\n(load average after: {' / '.join(f'{v:.1f}' for v in os.getloadavg())})")


def test_bench_ising():
    main()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        main()
