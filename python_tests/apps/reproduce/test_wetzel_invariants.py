"""The invariants stage of ``hessext reproduce wetzel`` at a reduced size: result types and the
results.json keys the issue names, resumption from the work folder's cache, and the report."""

import dataclasses
import json
import math

import pytest

from hessext.apps.reproduce import wetzel_invariants as W
from hessext.reporting.results import to_json
from hessext.reporting.workdir import WorkDir
from hessext.testing import single_thread

TINY = W.InvariantsConfig(
    central=W.SiameseConfig(n_train=300, n_test=120, epochs=2, hidden=(8,), integrator_steps=60),
    lorentz=W.SiameseConfig(n_train=300, n_test=120, epochs=2, hidden=(8,)),
    twin=W.TwinConfig(n_train=24, n_unlabelled=8, steps=30, hidden=(8,), n_test=41),
)
KEYS = {
    "siamese_central": ("test_accuracy", "expression", "r2"),
    "siamese_lorentz": ("test_accuracy", "expression", "r2"),
    "tnn": ("rmse", "rmse_plain", "uncertainty_error_spearman_outside"),
}


def test_reduced_run_types_keys_resume_and_report(tmp_path, monkeypatch):
    wd = WorkDir(tmp_path / "out", "wetzel")
    with single_thread():
        res = W.run_invariants(wd, quick=True, seed=3, progress=False, config=TINY)
    assert isinstance(res, W.InvariantsResults)
    assert isinstance(res.siamese_central, W.SiameseResult) and isinstance(res.tnn, W.TwinResult)
    data = json.loads(json.dumps(to_json(res)))
    for part, keys in KEYS.items():
        for key in keys:
            assert key in data[part], (part, key)
    for r in (res.siamese_central, res.siamese_lorentz):
        assert 0 <= r.test_accuracy <= 1 and isinstance(r.expression, str) and r.expression.startswith("z ≈")
        assert -1e-9 <= r.r2 <= r.r2_all_terms + 1e-9 <= 1 + 1e-9
        assert r.n_train == 300 and len(r.latent) == len(r.invariant) == 120
    t = res.tnn
    assert all(math.isfinite(v) for v in (t.rmse, t.rmse_plain, t.uncertainty_error_spearman_outside))
    assert t.rmse_ratio == pytest.approx(t.rmse / t.rmse_plain)
    assert len(t.grid_x) == len(t.grid_twin) == 41 and len(t.train_x) == 24

    # a rerun with the same settings reads every task from the cache: nothing is recomputed
    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached task")

    monkeypatch.setattr(W, "_siamese", fail)
    monkeypatch.setattr(W, "_twin", fail)
    again = W.run_invariants(
        WorkDir(tmp_path / "out", "wetzel"), quick=True, seed=3, progress=False, config=TINY
    )
    assert to_json(again) == to_json(res)
    # another seed is another fingerprint
    with pytest.raises(AssertionError, match="recomputed"):
        W.run_invariants(wd, quick=True, seed=4, progress=False, config=TINY)

    with wd.report("invariants") as rep:
        W.write_invariants(rep, res)
        folder = rep.finish()
    md = (folder / "report.md").read_text()
    assert "siamese_latent.png" in md and "twin_regression.png" in md
    assert res.siamese_central.expression in md
    assert (folder / "siamese_latent.png").read_bytes()[:4] == b"\x89PNG"


def test_protocols():
    quick, full = W.InvariantsConfig.quick(), W.InvariantsConfig.full()
    assert quick.central.latent == quick.lorentz.latent == 1
    assert full.central.n_train > quick.central.n_train and full.twin.n_seeds > 1
    assert dataclasses.asdict(quick) != dataclasses.asdict(full)
