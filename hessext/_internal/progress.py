"""The one progress bar of hessext (tqdm).

One rule everywhere: ``progress=None`` shows a bar when stderr is a terminal, ``True`` always
shows one, ``False`` never does. Bars are removed when they finish (``leave=False``), so a
long call leaves a clean terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def show_progress(progress: bool | None) -> bool:
    """Whether a bar is shown for the caller's ``progress`` argument (None: stderr is a tty)."""
    return sys.stderr.isatty() if progress is None else bool(progress)


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str,
    progress: bool | None,
    unit: str = "it",
    initial: int = 0,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or, with ``iterable=None``, one to ``update()`` by hand)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        disable=not show_progress(progress),
        leave=False,
    )
