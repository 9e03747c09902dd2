"""The working folder of a resumable study (``hessext reproduce NAME --out DIR``).

Layout::

    DIR/.hessext-workdir.json   marker: which study owns the folder
    DIR/cache/<key>.pt          finished pieces (checkpoints, Hessians, per-seed results), each
                                stored with the fingerprint of what it was computed from
    DIR/report/                 the report (figures, report.md, report.html, results.json),
                                replaced atomically at the end of every run

A rerun with the same arguments reuses every cached piece whose fingerprint matches and
recomputes the rest, so an interrupted run resumes where it stopped. The folder is refused when
it holds anything hessext did not write, or belongs to another study: nothing the user owns is
ever removed or overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hessext._version import __version__
from hessext.reporting.report import Report, UserError

__all__ = ["WorkDir", "fingerprint_of"]

_MARKER = ".hessext-workdir.json"


def fingerprint_of(*parts: Any) -> str:
    """SHA-256 of a JSON rendering of ``parts`` (configs, seeds, versions): the identity of a
    cached piece. Tensors are hashed by their exact bytes."""
    h = hashlib.sha256()

    def feed(obj):
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                h.update(f"k:{k}".encode())
                feed(obj[k])
        elif isinstance(obj, (list, tuple)):
            h.update(f"seq{len(obj)}".encode())
            for v in obj:
                feed(v)
        else:
            h.update(json.dumps(obj, sort_keys=True, default=repr).encode())

    for part in parts:
        feed(part)
    return h.hexdigest()


class WorkDir:
    """The folder ``out`` of study ``kind``: claimed on construction (before any work)."""

    def __init__(self, out, kind: str):
        self.root = Path(out).resolve()
        self.kind = kind
        marker = self.root / _MARKER
        if self.root.exists():
            if not self.root.is_dir():
                raise UserError(f"--out {out}: exists and is not a folder")
            entries = sorted(p.name for p in self.root.iterdir())
            if marker.exists():
                try:
                    owner = json.loads(marker.read_text()).get("study")
                except (OSError, ValueError):
                    owner = None
                if owner != kind:
                    raise UserError(
                        f"--out {out}: the folder belongs to another study ({owner!r}, "
                        f"not {kind!r}); choose another folder"
                    )
                foreign = [
                    e
                    for e in entries
                    if e not in (_MARKER, "cache", "report") and not e.startswith(".report.")
                ]
            else:
                foreign = entries
            if foreign:
                shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
                raise UserError(
                    f"--out {out}: the folder holds files hessext did not write ({shown}); "
                    "hessext never replaces them: choose a new or empty folder"
                )
        self.cache = self.root / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            marker.write_text(json.dumps({"study": kind, "written_by": f"hessext {__version__}"}) + "\n")

    # ------------------------------------------------------------------ cached pieces
    def _path(self, key: str) -> Path:
        if not key or any(c in key for c in "/\\") or key.startswith("."):
            raise ValueError(f"WorkDir: bad cache key {key!r}")
        return self.cache / f"{key}.pt"

    def load(self, key: str, fingerprint: str) -> Any | None:
        """The piece stored under ``key`` if it was computed from ``fingerprint``, else None
        (missing, from other inputs, or unreadable: then it is recomputed)."""
        path = self._path(key)
        if not path.exists():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - a damaged piece is recomputed, never trusted
            return None
        if not isinstance(stored, dict) or stored.get("fingerprint") != fingerprint:
            return None
        return stored["value"]

    def save(self, key: str, fingerprint: str, value: Any) -> Any:
        """Store ``value`` under ``key`` atomically; returns it."""
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        torch.save({"fingerprint": fingerprint, "value": value}, tmp)
        os.replace(tmp, path)
        return value

    def cached(self, key: str, fingerprint: str, compute: Callable[[], Any]) -> Any:
        """``load(key, fingerprint)``, or ``compute()`` stored under ``key``."""
        value = self.load(key, fingerprint)
        return value if value is not None else self.save(key, fingerprint, compute())

    # ------------------------------------------------------------------ the report
    def report(self, title: str) -> Report:
        """The Report written into DIR/report (replaced atomically when it finishes)."""
        return Report(self.root / "report", title)
