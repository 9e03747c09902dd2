"""Command-line argument types shared by ``hessext`` (cli.py) and the pipelines' own options
(apps/reproduce/*.py): a bad value is an argparse usage error (exit 2) before any work."""

from __future__ import annotations

import argparse


def int_at_least(low: int):
    """An argparse ``type=`` accepting integers >= ``low``, with a one-line error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse
