"""``hessext reproduce ssh`` at a tiny protocol: results.json's contract, the figures, and a
resumed run that trains only the networks the work folder does not hold."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from hessext.apps import ssh_study as S
from hessext.apps.reproduce import PIPELINES
from hessext.apps.reproduce import ssh as R
from hessext.cli import main
from hessext.training import PlateauStop

TINY = dataclasses.replace(
    S.PROTOCOLS["quick"],
    name="tiny",
    n_train=40,
    n_val=20,
    n_test=40,
    n_perturb=10,
    recipe=S.PROTOCOLS["quick"].recipe.replace(max_epochs=3, early_stopping=PlateauStop(2, 0.005, 1)),
    map_n_v=12,
    map_n_w=11,
    map_realisations=1,
    target_realisations=5,
    n_hessian=30,
    n_bootstrap=5,
    models=3,
)
PNG = b"\x89PNG\r\n\x1a\n"


def test_registered_and_usage_errors(capsys):
    assert PIPELINES["ssh"] is R
    with pytest.raises(SystemExit) as e:
        main(["reproduce", "ssh", "--models", "2"])
    assert e.value.code == 2 and "--models" in capsys.readouterr().err


def test_population_run_and_resume(tmp_path, monkeypatch):
    computed = []
    original = S.analyse_model

    def counting(seed, *args, **kwargs):
        computed.append(seed)
        return original(seed, *args, **kwargs)

    monkeypatch.setattr(S, "analyse_model", counting)
    out = tmp_path / "work"
    path, res = R.run_study(out, TINY, n_models=3, progress=False, umap=False)
    assert computed == [0, 1, 2] and res.run.computed == [0, 1, 2] and res.run.reused == []
    data = json.loads((path / "results.json").read_text())
    assert data["seeds"] == [0, 1, 2] and len(data["models"]) == 3
    for m in data["models"]:
        for key in (
            "seed",
            "id_f1",
            "cam_focus",
            "ssim",
            "trace",
            "lambda_max",
            "extrapolation_auroc",
            "rue_auroc",
        ):
            assert key in m
        assert sorted(m["ood_accuracy"]) == ["0.15", "0.5", "1", "2"]
        assert 0 <= m["map_accuracy"] <= 1 and m["seconds"]["train"] > 0
    pop = data["population"]
    assert pop["ood_accuracy_median"] == pytest.approx(np.median([m["map_accuracy"] for m in data["models"]]))
    assert "ood_accuracy_mean" in pop
    for name in S.SIGNALS:
        assert set(pop["spearman"][name]) >= {"rho", "low", "high", "n"}
    for png in ("ood_accuracy_histogram", "generalisation_maps", "cams", "pca_gap", "signals_vs_accuracy"):
        assert (path / f"{png}.png").read_bytes()[:8] == PNG
    cached = {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()}
    assert sorted(cached) == ["model-0.pt", "model-1.pt", "model-2.pt"]

    # a rerun with one more network trains only that one and leaves the others' files alone
    path, res = R.run_study(out, TINY, n_models=4, progress=False, umap=False)
    assert computed == [0, 1, 2, 3] and res.run.computed == [3] and res.run.reused == [0, 1, 2]
    assert all((out / "cache" / name).stat().st_mtime_ns == t for name, t in cached.items())
    again = json.loads((path / "results.json").read_text())
    assert again["models"][:3] == data["models"] and len(again["models"]) == 4
    # another protocol is another fingerprint: nothing reused
    other = dataclasses.replace(TINY, n_bootstrap=6)
    assert all(R._load(R.WorkDir(out, "ssh"), other, s) is None for s in range(4))


def test_umap_embedding_fits_the_clean_rows():
    pytest.importorskip("umap")
    rng = np.random.default_rng(0)
    gap = torch.from_numpy(rng.normal(size=(70, 9)))
    z = R._umap_embedding(gap, 40, seed=0)
    assert z.shape == (70, 2) and np.isfinite(z).all()
