"""``hessext reproduce smoothhess``: a reduced run end to end (the results.json contract, the
closed form of the ideal four-quadrant function, resuming from the cache) and its usage errors.
The full-size numbers are in docs/smoothhess-paper.md."""

import json
import math

import pytest

from hessext import cli
from hessext.apps.reproduce import PIPELINES
from hessext.apps.reproduce import smoothhess as sh

TINY = sh.Config(
    quick=True,
    seed=0,
    fq_points=4096,
    fq_epochs=2,
    n_sigma=20,
    n_beta=50,
    fq_samples=2048,
    digits_epochs=2,
    n_validation=40,
    pmse_points=4,
    pmse_heldout=4,
    pmse_samples=256,
    attack_points=6,
    attack_heldout=6,
    search_samples=256,
    eval_samples=512,
    sigma_grid=(1e-3, 1e-2),
    beta_grid=(5.0, 50.0),
)


pytestmark = pytest.mark.slow  # an end-to-end run of the pipeline (~30 s on 2 quiet cores)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoothhess") / "work"
    report = sh.run_study(TINY, out, progress=False, quiet=True)
    return out, report, json.loads((report / "results.json").read_text())


def test_results_json_contract(tiny_run):
    _, report, res = tiny_run
    assert {"report.md", "report.html", "results.json", "four_quadrant.png", "pmse.png", "attack.png"} <= {
        p.name for p in report.iterdir()
    }
    fq = res["four_quadrant"]
    for key in ("sigma", "h01", "h00", "h11", "softplus_beta", "softplus_h01"):
        assert key in fq
    assert len(fq["sigma"]) == len(fq["h01"]) >= 20 and len(fq["softplus_beta"]) >= 50
    assert set(fq["sigma"]) <= set(sh.paper_sigmas().tolist())
    methods = res["pmse"]["methods"]
    for needle in (
        "smoothhess+smoothgrad",
        "smoothgrad",
        "softplus hessian+gradient",
        "softplus gradient",
        "vanilla",
    ):
        assert any(needle in name for name in methods)
    assert all(v > 0 and math.isfinite(v) for v in methods.values())
    assert set(res["pmse"]["second_beats_first"]) == {"smoothhess+smoothgrad", "softplus hessian+gradient"}
    pha = res["attack"]["pha"]
    assert "smoothhess+smoothgrad (second order)" in pha and "smoothgrad (first order)" in pha
    assert all(0 <= v <= 1 for v in pha.values())
    assert len(res["checks"]) == 6 and res["timings_s"]["total"] > 0 and res["cpu_s"]["total"] > 0


def test_ideal_four_quadrant_is_the_closed_form_at_every_sigma(tiny_run):
    fq = tiny_run[2]["four_quadrant"]
    # one sampler call for all σ, the same z: a 2-homogeneous f gives the same estimate at every σ
    assert max(fq["ideal_h01"]) - min(fq["ideal_h01"]) <= 1e-9 * abs(fq["ideal_h01"][0])
    # ... within 5 of its standard errors (7 degrees of freedom) of the closed form
    assert abs(fq["ideal_h01"][0] - 2.5) <= 5 * fq["ideal_h01_stderr"][0]
    assert abs(fq["ideal_h00"][0] - 24 / (2 * math.pi)) <= 5 * fq["ideal_h00_stderr"][0]
    assert fq["closed_form"] == {"h01": 2.5, "h00": 24 / (2 * math.pi), "h11": 24 / (2 * math.pi)}


def test_rerun_resumes_from_the_cache(tiny_run):
    out, report, res = tiny_run
    again = json.loads((sh.run_study(TINY, out, progress=False, quiet=True) / "results.json").read_text())
    for key in ("four_quadrant", "pmse", "attack"):
        assert again[key] == res[key]


def test_paper_grids():
    assert len(sh.paper_sigmas()) == 198 and len(sh.paper_betas()) == 2880
    quick = sh.Config.make(True, 0)
    assert len(quick.sigmas()) >= 20 and len(quick.betas()) >= 50


def test_registered_and_usage_errors(tmp_path, capsys):
    assert PIPELINES["smoothhess"] is sh
    code = cli.main(
        ["reproduce", "smoothhess", "--quick", "--out", str(tmp_path / "w"), "--data", "absent.npz"]
    )
    assert code == 2 and "--data absent.npz" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert cli.main(["reproduce", "smoothhess", "--quick", "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep"
