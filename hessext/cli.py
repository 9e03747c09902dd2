"""The ``hessext`` command line: ``hessext info``, ``hessext demo``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hessext", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="what this installation provides (compiled kernels, devices)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "info":
        from hessext._buildinfo import main as info_main

        return info_main([])
    return 2
