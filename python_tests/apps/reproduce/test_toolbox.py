"""``hessext reproduce toolbox``: a reduced run on generated data (the results.json contract),
the --reference run against the 400 published extrapolation scores (skipped when the reference
data is absent), and usage errors."""

import json

import numpy as np
import pytest

from hessext import cli
from hessext.apps.reproduce import toolbox as tb
from hessext.testing import toolbox_dir

pytestmark = pytest.mark.slow  # end-to-end runs of the pipeline (~30 s on 2 quiet cores)

TINY = tb.Config(quick=True, seed=0, epochs=5, n_bootstrap=3)


def test_generated_run_contract(tmp_path):
    report = tb.run_study(TINY, tmp_path / "work", progress=False, quiet=True)
    res = json.loads((report / "results.json").read_text())
    assert {"spectrum.png", "phase_diagram.png", "scores.png", "report.md", "report.html"} <= {
        p.name for p in report.iterdir()
    }
    inf = res["influence"]
    assert len(inf["helpful"]) == len(inf["harmful"]) == 50 and len(inf["helpful"][0]) == 5
    assert all(0 <= i < 1000 for row in inf["helpful"] + inf["harmful"] for i in row)
    # helpful = the largest influence, harmful = the smallest (most negative)
    assert all(a >= b for a, b in zip(inf["influence_max"], inf["influence_min"]))
    rue = res["rue"]
    assert len(rue["true"]) == len(rue["minimal"]) == len(rue["prediction"]) == 50
    assert all(v >= 0 for v in rue["true"] + rue["minimal"] + rue["prediction"])
    ex = res["extrapolation"]
    assert set(ex["scores"]) == {"true", "predicted"} and set(ex["scores"]["true"]) == set(tb.THRESHOLDS)
    assert ex["published"] is None and ex["max_rel_err_vs_published"] is None
    # thresholds decrease, so at least as many directions are removed, and the scores shrink
    m = [ex["n_removed"][t] for t in tb.THRESHOLDS]
    assert m == sorted(m) and m[0] >= 2
    s = np.array([ex["scores"]["true"][t] for t in tb.THRESHOLDS])
    assert (np.diff(s, axis=0) <= 1e-12 * s.max()).all()
    assert res["spectrum"]["n_params"] == 740


def test_reference_reproduces_the_published_scores(tmp_path, capsys):
    ref = toolbox_dir()  # skips when the reference data is absent
    report = tb.run_study(TINY, tmp_path / "ref", reference=ref, progress=False)
    res = json.loads((report / "results.json").read_text())
    ex = res["extrapolation"]
    assert ex["n_compared"] == 400 and ex["max_rel_err_vs_published"] <= 1e-4
    assert ex["n_removed"] == {"1": 2, "0.1": 12, "0.01": 51, "0.001": 99}
    printed = capsys.readouterr().out
    assert "largest relative difference" in printed and printed.count("test ") >= 400
    assert res["misclassified"] == [21, 22, 23, 24, 25, 26]
    sp = res["spectrum"]
    assert abs(sp["lambda_top"][0] / 68.603 - 1) < 1e-4 and sp["n_negative"] == 99


def test_usage_errors(tmp_path, capsys):
    out = str(tmp_path / "w")
    assert cli.main(["reproduce", "toolbox", "--out", out, "--reference", str(tmp_path / "absent")]) == 2
    assert "--reference" in capsys.readouterr().err
    assert cli.main(["reproduce", "toolbox", "--out", out, "--checkpoint", str(tmp_path / "absent.pt")]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert cli.main(["reproduce", "toolbox", "--out", out, "--checkpoint", str(bad)]) == 2
    assert "not a Conv1DToolbox state dict" in capsys.readouterr().err
