"""The SSH study's per-network measures against brute force and scikit-learn, and its
population statistics on constructed populations."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from hessext.apps import ssh_study as S


def test_edge_focus_limits_and_formula():
    region = torch.zeros(50, 50, dtype=torch.bool)
    region[:, 23:27] = True
    region[[0, 1, 48, 49], :] = True
    assert int(region.sum()) == 384
    only_edge = region.double().unsqueeze(0)
    assert S.edge_focus(only_edge).item() == pytest.approx(2500 / 384)
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 50, 50, generator=g, dtype=torch.float64)
    m = (maps - maps.amin((1, 2), keepdim=True)) / (
        maps.amax((1, 2), keepdim=True) - maps.amin((1, 2), keepdim=True)
    )
    expected = torch.stack([mi[region].mean() / mi.mean() for mi in m])
    torch.testing.assert_close(S.edge_focus(maps), expected)
    # invariant under a positive affine change of the map (min-max normalised)
    torch.testing.assert_close(S.edge_focus(3 * maps + 7), expected)
    assert math.isnan(S.edge_focus(torch.ones(1, 50, 50)).item())


def test_classification_scores_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(10):
        y = torch.from_numpy(rng.integers(0, 2, 40))
        pred = torch.from_numpy(rng.integers(0, 2, 40))
        s = S.classification_scores(y, pred)
        p, r, f, _ = metrics.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((p, r, f), abs=1e-12)
        assert s["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred))
        assert s["topological_recall"] == pytest.approx(metrics.recall_score(y, pred, zero_division=0))
    # a network that calls everything topological: trivial precision 0 (never predicted)
    s = S.classification_scores(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 1, 1]))
    assert s["trivial_recall"] == 0 and s["topological_recall"] == 1 and s["precision"] == pytest.approx(0.25)


def _model(seed, acc, **signals):
    values = {}
    for f in dataclasses.fields(S.ModelResult):
        if f.name in signals:
            values[f.name] = signals[f.name]
        elif f.type in ("int", "bool"):
            values[f.name] = 0
        elif f.type.startswith("dict"):
            values[f.name] = {}
        else:
            values[f.name] = 0.5
    values.update(seed=seed, map_accuracy=acc, ood_accuracy={"0.15": acc, "2": acc / 2})
    values["pca"] = {"gap": {"explained_variance_ratio": [0.9, 0.1], "ood_pc1_separation": acc}}
    return S.ModelResult(**values)


def test_population_statistics():
    acc = [0.55, 0.6, 0.9, 0.85, 0.5, 0.7]
    rng = np.random.default_rng(1)
    models = [
        _model(k, a, cam_focus=2 * a, trace=-a, lambda_max=float(rng.normal())) for k, a in enumerate(acc)
    ]
    pop = S.population(models, n_boot=200)
    assert pop.n_models == 6 and pop.ood_accuracy_median == pytest.approx(np.median(acc))
    assert pop.ood_accuracy_mean == pytest.approx(np.mean(acc))
    assert (pop.above_0_8, pop.below_0_6) == (2, 2)
    assert pop.ood_set_accuracy_mean == pytest.approx({"0.15": np.mean(acc), "2": np.mean(acc) / 2})
    assert pop.spearman["cam_focus"].rho == pytest.approx(1.0) and pop.spearman["trace"].rho == pytest.approx(
        -1.0
    )
    assert pop.spearman["gap_ood_pc1_separation"].rho == pytest.approx(1.0)
    # a signal that is the same for every network has no rank correlation
    assert math.isnan(pop.spearman["id_f1"].rho)
    assert set(pop.spearman) == set(S.SIGNALS)
