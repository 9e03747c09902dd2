"""``hessext demo`` and ``hessext demo boundary`` end to end at reduced size, the report writer,
and the rank-formula AUROC against a brute-force pair count."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from hessext.apps.analysis import auroc
from hessext.cli import main
from hessext.reporting.report import Report

PNG = b"\x89PNG\r\n\x1a\n"


def _brute_auroc(neg, pos):
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for n, p in itertools.product(neg, pos))
    return wins / (len(neg) * len(pos))


def test_auroc_matches_pair_count_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        neg = rng.integers(0, 6, size=rng.integers(1, 12)).astype(float)
        pos = rng.integers(0, 6, size=rng.integers(1, 12)).astype(float)
        assert auroc(neg, pos) == pytest.approx(_brute_auroc(neg, pos), abs=1e-12)
    assert auroc([0, 1], [2, 3]) == 1.0 and auroc([2, 3], [0, 1]) == 0.0


def test_report_is_atomic(tmp_path):
    out = tmp_path / "rep"
    with pytest.raises(RuntimeError):
        with Report(out, "t") as rep:
            rep.text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with Report(out, "t") as rep:
        rep.text("a *b* `c`")
        rep.table(["x", "y"], [[1, 2]])
        rep.finish()
    html = (out / "report.html").read_text()
    assert "<i>b</i>" in html and "<code>c</code>" in html and "<td>1</td>" in html


def _numbers(md):
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"\*\*([^*]+?) = (\d+(?:\.\d+)?(?:e[-+]?\d+)?)\*\*", md)
    }


def test_ssh_demo_quick(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == [
        "cam.png",
        "influence.png",
        "report.html",
        "report.md",
        "rue_vs_W.png",
        "score_ood.png",
        "score_vs_W.png",
        "spectrum.png",
    ]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    m = re.search(r"AUROC clean vs W = 2\*\*: extrapolation score (\d\.\d+), RUE (\d\.\d+)", md)
    assert m and 0 <= float(m.group(1)) <= 1 and 0 <= float(m.group(2)) <= 1
    for needle in (
        "| seed | 0 |",
        "damping δ for influence",
        "damping δ for RUE",
        "extrapolation-score threshold",
        "12 images at W = 0",
        "24 images each",
        "| total |",
        "1,024",
    ):
        assert needle in md, needle
    assert md.count("![Figure") == 6
    assert (out / "report.html").read_text().count("<img") == 6
    assert "report written to" in capsys.readouterr().out


def test_boundary_demo_quick(tmp_path):
    out = tmp_path / "b"
    assert main(["demo", "boundary", "--quick", "--out", str(out), "--no-progress"]) == 0
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == [
        "alignment.png",
        "boundary_spectrum.png",
        "margin.png",
        "reconstruction.png",
        "report.html",
        "report.md",
        "results.json",
    ]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    nums = _numbers(md)
    res = json.loads((out / "results.json").read_text())  # the typed results the report came from
    assert res["g_theta"] == pytest.approx(nums["G_θ"], rel=1e-3) and res["num_params"] == 371
    assert res["outliers"] == int(re.search(r"outliers .* \| (\d+) \|", md).group(1))
    assert 0 < nums["G_θ"] <= 1 and nums["margin"] > 0
    assert "All eigenvectors were used." in md  # width 16: dense Hessian, complete G_θ
    assert re.search(r"outliers .* \| \d+ \|", md)
