"""The ``hessext`` command line: ``hessext info``, ``hessext demo [boundary]``, ``hessext analyze``.

Bad arguments are usage errors (one line naming the option, the value and what is allowed;
exit code 2) caught before any heavy work. Report folders are written atomically and never
replace a folder that hessext did not write (hessext/reporting/report.py).
"""

from __future__ import annotations

import argparse
import sys

import torch

from hessext import _buildinfo
from hessext.apps import analyze, demo_boundary, demo_ssh
from hessext.apps.arguments import int_at_least
from hessext.apps.reproduce import PIPELINES
from hessext.reporting.report import UserError


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="hessext", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="what this installation provides (compiled kernels, devices)")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument(
        "--require-cuda-kernels",
        action="store_true",
        help="exit 1 unless every op has a CUDA kernel (CI's check of the CUDA build)",
    )

    demo = sub.add_parser(
        "demo",
        help="the full Hessian analysis of an SSH phase classifier "
        "(built-in data, no network); 'hessext demo boundary' for the "
        "decision-boundary study",
        description="Generate the disordered SSH data, train the SSH CNN, "
        "assemble its exact Hessian and write a report folder (figures, "
        "report.md, report.html). 'hessext demo boundary': the three-Gaussian "
        "decision-boundary study.",
    )
    demo.add_argument("study", nargs="?", choices=["ssh", "boundary"], default="ssh")
    demo.add_argument(
        "--out",
        default=None,
        help="report folder (default ./hessext-report, ./hessext-boundary-report for boundary)",
    )
    demo.add_argument(
        "--size",
        choices=["small", "default", "large"],
        default="default",
        help="problem size (small: a quick check in seconds)",
    )
    demo.add_argument("--quick", action="store_true", help="same as --size small")
    demo.add_argument(
        "--seed", type=int_at_least(0), default=0, help="first seed (the ssh demo runs seeds S, S+1, ...)"
    )
    demo.add_argument(
        "--seeds",
        type=int_at_least(1),
        default=None,
        help="how many seeds the ssh demo repeats the analysis for (default 3)",
    )
    demo.add_argument("--threads", type=int_at_least(1), default=1, help="torch threads (default 1)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    an = sub.add_parser(
        "analyze",
        help="the toolbox on your own model and data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Exact Hessian spectrum, influence, RUE and the extrapolation "
        "score of your classifier, as a report folder.\n\n" + analyze.DATA_FORMAT,
    )
    an.add_argument(
        "--model",
        required=True,
        help="TorchScript file (torch.jit.save), or a state-dict checkpoint together with --arch",
    )
    an.add_argument("--data", required=True, help=".pt or .npz data file (format above)")
    an.add_argument(
        "--arch",
        default=None,
        help="module:Class to build for a state dict, e.g. "
        "hessext.models:Conv1DToolbox (constructed without arguments)",
    )
    an.add_argument("--out", default="hessext-analysis", help="report folder (default ./hessext-analysis)")
    an.add_argument("--seed", type=int_at_least(0), default=0)
    an.add_argument(
        "--bootstrap", type=int_at_least(2), default=50, help="RUE bootstrap models (default 50, at least 2)"
    )
    an.add_argument("--threads", type=int_at_least(1), default=1)
    an.add_argument("--no-progress", action="store_true")

    if PIPELINES:
        rep = sub.add_parser("reproduce", help="rerun a paper's experiments end to end")
        which = rep.add_subparsers(dest="pipeline", required=True)
        for name, module in PIPELINES.items():
            p = which.add_parser(name, help=module.HELP, description=module.HELP)
            p.add_argument("--quick", action="store_true", help="the reduced protocol (minutes)")
            p.add_argument(
                "--out",
                default=f"hessext-{name}",
                help=f"work folder (default ./hessext-{name}; an interrupted run resumes from it)",
            )
            p.add_argument("--seed", type=int_at_least(0), default=0)
            p.add_argument("--threads", type=int_at_least(1), default=2, help="torch threads (default 2)")
            p.add_argument("--no-progress", action="store_true", help="no progress bars")
            module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default sys.argv[1:]); returns the exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "info":
        flags = [
            f
            for f, on in (("--json", args.json), ("--require-cuda-kernels", args.require_cuda_kernels))
            if on
        ]
        return _buildinfo.main(flags)
    # Small convolutions gain nothing from a second thread, and on a loaded machine the
    # spin-waiting threads made the Hessian assembly 3x slower (measured): one thread by default.
    # Restored afterwards, so that main() called in-process leaves the caller's setting alone.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)


def _run(args) -> int:
    progress = False if args.no_progress else None
    try:
        if args.command == "demo":
            size = "small" if args.quick else args.size
            if args.study == "boundary":
                path, timer = demo_boundary.run_boundary_demo(
                    args.out or "hessext-boundary-report",
                    size="default" if size == "large" else size,
                    seed=args.seed,
                    progress=progress,
                )
            else:
                path, timer = demo_ssh.run_ssh_demo(
                    args.out or "hessext-report",
                    size=size,
                    seed=args.seed,
                    n_seeds=args.seeds or demo_ssh.N_SEEDS,
                    progress=progress,
                )
        elif args.command == "reproduce":
            path = PIPELINES[args.pipeline].run(args)
            print(f"report written to {path}/report.html")
            return 0
        else:
            path, timer = analyze.run_analyze(
                args.model,
                args.data,
                arch=args.arch,
                out=args.out,
                seed=args.seed,
                n_bootstrap=args.bootstrap,
                progress=progress,
            )
    except UserError as e:
        print(f"hessext {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(f"report written to {path}/report.html ({timer.total:.1f} s)")
    return 0
