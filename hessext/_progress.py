"""tqdm progress bars that are off when stderr is not a terminal or when the caller says so."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable, *, total=None, desc: str, progress: bool | None):
    show = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(iterable, total=total, desc=desc, disable=not show, leave=False)
