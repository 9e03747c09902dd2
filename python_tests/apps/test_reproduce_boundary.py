"""``hessext reproduce boundary`` end to end on the 'test' protocol (every budget cut to a few
epochs): the structure of results.json the issue asks for, resuming after an interruption with
nothing recomputed that is cached, and usage errors before any work."""

import json

import pytest
import torch

from hessext.apps.reproduce import boundary
from hessext.cli import main

REQUIRED = (
    "train_accuracy",
    "test_accuracy",
    "top_eigenvalues",
    "outliers",
    "trace",
    "g_theta",
    "g_theta_epsilon",
)


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    torch.set_num_threads(1)


def _numbers(results):
    """results.json without its timings (which differ from run to run)."""
    out = dict(results)
    out.pop("timings")
    for e in out["experiments"].values():
        for s in e["seeds"]:
            s.pop("train_seconds")
            s.pop("analysis_seconds")
    return out


def test_results_structure_and_claims(tmp_path):
    names = ["gauss_normal", "gauss_adversarial_init", "checkerboard_normal", "checkerboard_noisy_init"]
    path = boundary.run_pipeline(tmp_path / "w", protocol="test", seeds=[0, 1], only=names, quiet=True)
    res = json.loads((path / "results.json").read_text())
    assert set(res["experiments"]) == set(names)  # dependencies (random labels, noisy) trained, not reported
    for name, e in res["experiments"].items():
        assert [s["seed"] for s in e["seeds"]] == [0, 1]
        for s in e["seeds"]:
            assert all(k in s for k in REQUIRED), name
            assert (
                len(s["top_eigenvalues"]) >= 10 and s["top_eigenvalues"] == sorted(s["top_eigenvalues"])[::-1]
            )
            assert 0 <= s["g_theta"] <= 1 and s["g_theta_exact"]
            assert (s["margin"] is not None) == name.startswith("checkerboard")
        assert e["summary"]["g_theta"]["n"] == 2
    for claim in (
        "c_minus_1_outliers",
        "more_outliers_after_adversarial_init",
        "g_theta_larger_for_complex_boundaries",
        "wider_margin_normal_than_noisy_init",
    ):
        assert claim in res["claims"] and res["claims"][claim] in (0.0, 0.5, 1.0)
        detail = res["claim_details"][claim]
        assert sum(detail["holds"]) / 2 == res["claims"][claim]
    figures = {p.name for p in path.glob("*.png")}
    assert {"spectra.png", "margin.png", "g_theta_histograms.png", "alignment_gauss_normal.png"} <= figures
    md = (path / "report.md").read_text()
    assert "`wider_margin_normal_than_noisy_init`" in md and md.count("![Figure") == len(figures)


def test_resume_after_an_interruption(tmp_path, monkeypatch):
    names = ["circles_normal", "intro1d_normal"]
    ref = boundary.run_pipeline(tmp_path / "ref", protocol="test", seeds=[3], only=names, quiet=True)
    expected = _numbers(json.loads((ref / "results.json").read_text()))

    calls = {"train": [], "spectrum": 0}
    real_train, real_spectrum = boundary.train_mlps, boundary.study.spectrum_of

    def counting_train(models, *a, **kw):
        calls["train"].append(len(models))
        return real_train(models, *a, **kw)

    def interrupted_spectrum(*a, **kw):
        calls["spectrum"] += 1
        if calls["spectrum"] == 2:  # the kill: after the first model's spectrum was stored
            raise KeyboardInterrupt
        return real_spectrum(*a, **kw)

    monkeypatch.setattr(boundary, "train_mlps", counting_train)
    monkeypatch.setattr(boundary.study, "spectrum_of", interrupted_spectrum)
    work = tmp_path / "w"
    with pytest.raises(KeyboardInterrupt):
        boundary.run_pipeline(work, protocol="test", seeds=[3], only=names, quiet=True)
    assert calls["train"] == [1, 1] and not (work / "report").exists()
    cached = sorted(p.name for p in (work / "cache").iterdir())
    assert "circles_normal-seed3-spectrum.pt" in cached and "intro1d_normal-seed3-spectrum.pt" not in cached

    def counting_spectrum(*a, **kw):
        calls["spectrum"] += 1
        return real_spectrum(*a, **kw)

    calls = {"train": [], "spectrum": 0}
    monkeypatch.setattr(boundary.study, "spectrum_of", counting_spectrum)
    path = boundary.run_pipeline(work, protocol="test", seeds=[3], only=names, quiet=True)
    assert calls["train"] == [] and calls["spectrum"] == 1  # only the missing spectrum
    assert _numbers(json.loads((path / "results.json").read_text())) == expected

    # one more seed: only its model is trained and analysed
    calls = {"train": [], "spectrum": 0}
    boundary.run_pipeline(work, protocol="test", seeds=[3, 4], only=["intro1d_normal"], quiet=True)
    assert calls["train"] == [1] and calls["spectrum"] == 1


def test_usage_errors_before_work(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["reproduce", "boundary", "--only", "gauss_normal,nope", "--out", str(out)]) == 2
    assert "unknown experiment(s) nope" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "boundary", "--seeds", "0", "--out", str(out)])
    assert e.value.code == 2 and not out.exists()
    assert main(["reproduce", "boundary", "--mnist", str(tmp_path / "missing.npz"), "--out", str(out)]) == 2
    assert "--mnist" in capsys.readouterr().err and not out.exists()
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    assert main(["reproduce", "boundary", "--only", "intro1d_normal", "--out", str(user)]) == 2
    assert (user / "notes.txt").read_text() == "keep me"
