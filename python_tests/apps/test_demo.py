"""``hessext demo`` and ``hessext demo boundary`` end to end at reduced size, the report writer,
and the rank-formula AUROC against a brute-force pair count."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest

from hessext.apps.analysis import auroc
from hessext.apps.demo_ssh import CLAIMS, settle
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


def test_settle_needs_every_seed_beyond_the_dead_zone():
    assert settle([0.7, 0.8, 0.65], above=0.6, below=0.4) is True
    assert settle([0.1, 0.3], above=0.6, below=0.4) is False
    assert settle([0.7, 0.5], above=0.6, below=0.4) is None  # one seed in the dead zone
    assert settle([0.7, 0.3], above=0.6, below=0.4) is None  # seeds disagree
    assert settle([0.7, float("nan")], above=0.6, below=0.4) is None
    assert settle([], above=0.6, below=0.4) is None


def _demo(tmp_path, seed):
    out = tmp_path / f"report-{seed}"
    assert main(["demo", "--quick", "--seed", str(seed), "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_ssh_demo_quick_over_seeds(tmp_path, capsys):
    out, res = _demo(tmp_path, 0)
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == [
        "cam.png",
        "influence.png",
        "report.html",
        "report.md",
        "results.json",
        "rue_vs_W.png",
        "score_ood.png",
        "score_vs_W.png",
        "spectrum.png",
    ]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    md = (out / "report.md").read_text()
    m = re.search(r"AUROC clean vs W = 2\*\* \(mean ± std over 3 seeds\): extrapolation score (\d\.\d+)", md)
    assert m and 0 <= float(m.group(1)) <= 1
    for needle in (
        "| seeds | 0, 1, 2 |",
        "damping δ for influence",
        "damping δ for RUE",
        "extrapolation-score threshold",
        "12 images at W = 0",
        "24 images each",
        "variance over b of the logit margin",
        "| total |",
        "1,024",
    ):
        assert needle in md, needle
    assert md.count("![Figure") == 6
    assert (out / "report.html").read_text().count("<img") == 6
    assert "report written to" in capsys.readouterr().out

    # results.json: the seeds, every number as mean and std, the conclusions
    assert res["seeds"] == [0, 1, 2] and len(res["per_seed"]) == 3
    for number in res["numbers"].values():
        assert set(number) == {"mean", "std", "n"} and number["n"] == 3
    assert set(res["conclusions"]) == {c.name for c in CLAIMS}
    for name, claim in res["claims"].items():
        values = [s_claim for s_claim in claim["values"]]
        assert res["conclusions"][name] == settle(
            values, above=claim["threshold_true"], below=claim["threshold_false"]
        )
        assert claim["summary"]["mean"] == pytest.approx(np.mean(values), nan_ok=True)
    acc = [s["accuracy"]["W = 2"] for s in res["per_seed"]]
    assert res["numbers"]["accuracy W = 2"]["mean"] == pytest.approx(np.mean(acc))
    assert res["numbers"]["accuracy W = 2"]["std"] == pytest.approx(np.std(acc, ddof=1))
    for claim in res["conclusions"].values():
        text = "**" if claim is not None else "*not settled*"
        assert text in md

    # another seed base states nothing that contradicts this one
    _, other = _demo(tmp_path, 100)
    assert other["seeds"] == [100, 101, 102]
    for name, verdict in res["conclusions"].items():
        if verdict is not None and other["conclusions"][name] is not None:
            assert verdict == other["conclusions"][name], name


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
