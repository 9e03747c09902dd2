"""Report folders: PNG figures + report.md + report.html (+ results.json), written atomically,
never over what hessext did not write.

Everything goes into a hidden temporary sibling of the target folder; only ``Report.finish``
renames it into place, so an error half-way leaves no half-written report, and an existing
report is only replaced once the new one is complete. A report folder carries a marker
(``.hessext-report.json``) listing the files hessext wrote; a target that exists and holds
anything else — a user's folder, ``--out .`` — is refused before any work starts, with the
names of the files that are in the way. matplotlib is imported lazily (Agg backend, the
documented lazy load) so that ``import hessext`` stays fast.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hessext._version import __version__

__all__ = ["Report", "StageTimer", "UserError", "pyplot", "MARKER"]

MARKER = ".hessext-report.json"


class UserError(Exception):
    """A problem with the user's files or arguments: the command line reports it as one line
    and exits with code 2."""


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of an existing ``folder`` that a previous hessext report did not write."""
    entries = sorted(p.name for p in folder.iterdir())
    try:
        ours = set(json.loads((folder / MARKER).read_text())["files"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    return [e for e in entries if e not in ours]


def check_target(out) -> Path:
    """The resolved report folder ``out``, after checking that hessext may (re)place it: it is
    new, empty, or a previous hessext report holding only its own files."""
    final = Path(out).resolve()
    if final.exists():
        if not final.is_dir():
            raise UserError(f"--out {out}: exists and is not a folder")
        foreign = _foreign_entries(final)
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise UserError(
                f"--out {out}: the folder holds files hessext did not write ({shown}); "
                "hessext never replaces them: choose a new or empty folder"
            )
    return final


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


class StageTimer:
    """Numbered stages printed to stderr as they start and end ("[2/6] train ... 12.3 s").
    ``timings`` holds each stage's wall time, ``cpu_timings`` the process CPU time it used (all
    threads: on a shared machine the wall time alone says little)."""

    def __init__(self, n_stages: int, *, quiet: bool = False):
        self.n, self.k, self.quiet = n_stages, 0, quiet
        self.timings: dict[str, float] = {}
        self.cpu_timings: dict[str, float] = {}
        self.t0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def stage(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                timer.k += 1
                self.t = time.perf_counter()
                self.cpu = time.process_time()
                if not timer.quiet:
                    print(f"[{timer.k}/{timer.n}] {name} ...", file=sys.stderr, flush=True)
                return self

            def __exit__(self, exc_type, *_):
                dt = time.perf_counter() - self.t
                timer.timings[name] = dt
                timer.cpu_timings[name] = time.process_time() - self.cpu
                if exc_type is None and not timer.quiet:
                    print(
                        f"      {name}: {dt:.1f} s (CPU {timer.cpu_timings[name]:.1f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                return False

        return _Stage()

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def cpu_total(self) -> float:
        """Process CPU time since the timer started, seconds."""
        return time.process_time() - self.cpu0

    def table(self) -> list[list[str]]:
        rows = [[name, f"{dt:.1f}"] for name, dt in self.timings.items()]
        rows.append(["total", f"{self.total:.1f}"])
        return rows


class Report:
    """A report being written. Use as a context manager: leaving it with an exception removes
    the temporary folder; ``finish()`` writes report.md/report.html and moves it into place."""

    def __init__(self, out, title: str):
        self.out = out
        self.final = check_target(out)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=self.final.parent))
        self.title = title
        self.blocks: list[str] = []
        self.figures: list[str] = []
        self._n_fig = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None:
            self.abort()
        return False

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ content
    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append("#" * level + " " + text)

    def text(self, markdown: str) -> None:
        self.blocks.append(markdown.strip())

    def table(self, header: list[str], rows: list[list]) -> None:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.blocks.append("\n".join(lines))

    def figure(self, fig, name: str, caption: str) -> Path:
        """Save a matplotlib figure as ``name``.png (150 dpi) with a numbered caption."""
        plt = pyplot()
        self._n_fig += 1
        path = self.tmp / f"{name}.png"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(path.name)
        self.blocks.append(
            f"![Figure {self._n_fig}]({path.name})\n\n*Figure {self._n_fig}.* {caption.strip()}"
        )
        return self.final / path.name

    def save_json(self, name: str, obj) -> Path:
        """Write ``obj`` as ``name`` (JSON, indented) into the report."""
        (self.tmp / name).write_text(json.dumps(obj, indent=1, allow_nan=True) + "\n")
        return self.final / name

    # ------------------------------------------------------------------ output
    def markdown(self) -> str:
        return f"# {self.title}\n\n" + "\n\n".join(self.blocks) + "\n"

    def finish(self) -> Path:
        md = self.markdown()
        (self.tmp / "report.md").write_text(md)
        (self.tmp / "report.html").write_text(markdown_to_html(md, self.title))
        files = sorted(p.name for p in self.tmp.iterdir())
        (self.tmp / MARKER).write_text(
            json.dumps({"written_by": f"hessext {__version__}", "title": self.title, "files": files}) + "\n"
        )
        old = None
        if self.final.exists():
            if _foreign_entries(self.final):  # someone added files while we worked
                raise UserError(
                    f"--out {self.out}: files appeared in the folder while the report "
                    f"was written; the new report is in {self.tmp}"
                )
            old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.final.parent))
            self.final.rename(old / self.final.name)
        self.tmp.rename(self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<i>\1</i>", text)
    return text


def markdown_to_html(md: str, title: str) -> str:
    """The small markdown subset Report writes (headings, paragraphs, lists, tables, images,
    code spans) as a self-contained HTML page."""
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
        "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
        "padding:2px 8px}code{background:#f3f3f3}</style></head><body>",
    ]
    for block in md.strip().split("\n\n"):
        lines = block.split("\n")
        first = lines[0]
        m = re.match(r"^(#+) (.*)", first)
        if m and len(lines) == 1:
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
        elif (m := re.match(r"^!\[([^\]]*)\]\(([^)]+)\)$", first)) and len(lines) == 1:
            out.append(f"<img src='{html.escape(m.group(2))}' alt='{html.escape(m.group(1))}'>")
        elif first.startswith("|"):
            rows = [r.strip("|").split(" | ") for r in lines if not r.startswith("|---")]
            cells = ["<tr>" + "".join(f"<th>{_inline(c.strip())}</th>" for c in rows[0]) + "</tr>"]
            cells += [
                "<tr>" + "".join(f"<td>{_inline(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:]
            ]
            out.append("<table>" + "".join(cells) + "</table>")
        elif first.startswith("- "):
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    out.append("</body></html>")
    return "\n".join(out)
