"""``hessext reproduce wetzel`` at a tiny size (L = 4, 6, 8, a few configurations and epochs):
every stage runs, results.json holds the keys the issue names, a rerun comes from the cache,
the report is written, and a folder hessext did not write is refused. (The physics is checked
where it is computed: tests of datasets/ising2d, interpret/, models/ising; the measured
--quick numbers are in docs/wetzel-ising.md.)"""

import argparse
import json

import pytest

from hessext.apps.reproduce import PIPELINES
from hessext.apps.reproduce import wetzel as W
from hessext.reporting.report import StageTimer
from hessext.reporting.results import to_json, write_json
from hessext.reporting.workdir import WorkDir
from hessext.testing import single_thread

from .test_wetzel_invariants import TINY as TINY_INVARIANTS

TINY = W.Protocol(
    sizes=(4, 6, 8),
    broad=tuple(round(1.0 + 0.2 * k, 2) for k in range(14)),
    n_broad=24,
    window_half=0.1,
    window_step=0.05,
    n_window=32,
    classifier_epochs=2,
    ae_epochs=2,
    probe_epochs=2,
    n_bootstrap=4,
    ae_hidden=4,
    probe_L=8,
    probe_channels=2,
    influence_L=4,
    n_influence_test=8,
)


@pytest.mark.slow
def test_tiny_run_keys_cache_and_report(tmp_path, monkeypatch):
    wd = WorkDir(tmp_path / "out", W.NAME)
    with single_thread():
        res, extra = W.compute(wd, TINY, 5, False, StageTimer(9), [], invariants=TINY_INVARIANTS)
        with wd.report("wetzel (tiny)") as rep:
            W.write_report(rep, res, extra, TINY)
            write_json(rep.tmp / "results.json", res)
            folder = rep.finish()
    data = json.loads((folder / "results.json").read_text())
    for key in ("tc_estimate", "tc_error", "tc_exact"):
        assert isinstance(data["ising"][key], float), key
    assert data["ising"]["tc_exact"] == pytest.approx(2.269185314213022)
    table = data["correlation_probe"]["table"]
    assert {row["receptive_field"] for row in table} == {"full", "1x2", "1x1", "baseline"}
    assert all({"train_loss", "val_loss"} <= set(row) for row in table)
    assert data["correlation_probe"]["bottleneck_quantity"] in ("magnetization", "energy")
    assert set(data["correlation_probe"]["r2_by_quantity"]) == {"magnetization", "energy"}
    assert 0 <= data["autoencoder"]["latent_abs_corr_m"] <= 1
    for part in ("siamese_central", "siamese_lorentz"):
        assert {"test_accuracy", "expression", "r2"} <= set(data[part])
    assert {"rmse", "rmse_plain", "uncertainty_error_spearman_outside"} <= set(data["tnn"])
    assert data["influence"]["n_train"] > 0
    md = (folder / "report.md").read_text()
    assert "T_c" in md and "png" in md

    # a rerun with the same settings reads every Monte Carlo and training piece from the cache
    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached piece")

    for name in ("ising", "_train_classifiers", "_train_autoencoder", "_probe", "_influence"):
        monkeypatch.setattr(W, name, fail)
    with single_thread():
        again, _ = W.compute(
            WorkDir(tmp_path / "out", W.NAME), TINY, 5, False, StageTimer(9), [], invariants=TINY_INVARIANTS
        )
    assert json.dumps(to_json(again.ising)) == json.dumps(to_json(res.ising))  # NaN-safe


def test_registered_and_refuses_a_foreign_folder(tmp_path):
    assert PIPELINES["wetzel"] is W
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not hessext's")
    args = argparse.Namespace(quick=True, seed=0, out=foreign, no_progress=True, threads=1)
    with pytest.raises(Exception, match="hessext"):
        W.run(args)
    assert (foreign / "notes.txt").read_text() == "not hessext's"


def test_protocols():
    quick, full = W.Protocol.quick(), W.Protocol.full()
    assert len(quick.sizes) >= 3 and len(full.sizes) > len(quick.sizes)
    assert quick.probe_L in quick.sizes and quick.influence_L in quick.sizes
