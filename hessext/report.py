"""Report folders: PNG figures + report.md + report.html, written atomically.

Everything goes into a hidden temporary sibling of the target folder; only ``Report.finish``
renames it into place, so an error half-way leaves no half-written report (and an existing
report of the same name is only replaced once the new one is complete). matplotlib is imported
lazily (Agg backend) so that ``import hessext`` stays fast.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import sys
import time
from pathlib import Path

__all__ = ["Report", "StageTimer", "pyplot"]


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


class StageTimer:
    """Numbered stages printed to stderr as they start and end ("[2/6] train ... 12.3 s")."""

    def __init__(self, n_stages: int, *, quiet: bool = False):
        self.n, self.k, self.quiet = n_stages, 0, quiet
        self.timings: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def stage(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                timer.k += 1
                self.t = time.perf_counter()
                if not timer.quiet:
                    print(f"[{timer.k}/{timer.n}] {name} ...", file=sys.stderr, flush=True)
                return self

            def __exit__(self, exc_type, *_):
                dt = time.perf_counter() - self.t
                timer.timings[name] = dt
                if exc_type is None and not timer.quiet:
                    print(f"      {name}: {dt:.1f} s", file=sys.stderr, flush=True)
                return False

        return _Stage()

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0

    def table(self) -> list[list[str]]:
        rows = [[name, f"{dt:.1f}"] for name, dt in self.timings.items()]
        rows.append(["total", f"{self.total:.1f}"])
        return rows


class Report:
    """A report being written. Use as a context manager: leaving it with an exception removes
    the temporary folder; ``finish()`` writes report.md/report.html and moves it into place."""

    def __init__(self, out, title: str):
        self.final = Path(out).resolve()
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
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
        self.blocks.append(f"![Figure {self._n_fig}]({path.name})\n\n"
                           f"*Figure {self._n_fig}.* {caption.strip()}")
        return self.final / path.name

    def save_text(self, name: str, content: str) -> None:
        (self.tmp / name).write_text(content)

    # ------------------------------------------------------------------ output
    def markdown(self) -> str:
        return f"# {self.title}\n\n" + "\n\n".join(self.blocks) + "\n"

    def finish(self) -> Path:
        md = self.markdown()
        (self.tmp / "report.md").write_text(md)
        (self.tmp / "report.html").write_text(markdown_to_html(md, self.title))
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
            self.final.rename(old)
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
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
           "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #bbb;"
           "padding:2px 8px}code{background:#f3f3f3}</style></head><body>"]
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
            cells += ["<tr>" + "".join(f"<td>{_inline(c.strip())}</td>" for c in r) + "</tr>"
                      for r in rows[1:]]
            out.append("<table>" + "".join(cells) + "</table>")
        elif first.startswith("- "):
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    out.append("</body></html>")
    return "\n".join(out)
