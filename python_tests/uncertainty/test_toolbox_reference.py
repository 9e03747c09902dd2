"""Reproduce the Hessian-based toolbox's published extrapolation scores (Dawid et al. 2022).

Everything here comes from the original repository: the trained Conv1d classifier, its stored
float32 Hessian (740×740, state-dict order), the 50 test rows and the scores it published for
thresholds t ∈ {1, 0.1, 0.01, 0.001} in a "true" (true-label loss) and "min" (predicted-label
loss) version. Its convention: per-example loss gradient including the L2 term (λ/n)θ with
λ = 0.05, n = 1000.

Tolerance: the published scores are float32 computations; the inputs' min-max normalisation is
reproduced only to ~1e-5 (the training matrix is absent), so 1e-4 relative error is the bound
the issue sets and leaves a 10× margin over both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import hessext
from hessext.models import Conv1DToolbox
from hessext.regularizers import L2
from hessext.testing import shared_dir


def _reference_dir() -> Path | None:
    shared = shared_dir()
    return shared / "reference" / "hessian_toolbox_ll_cdw" if shared else None


REF = _reference_dir()
pytestmark = pytest.mark.skipif(
    REF is None,
    reason="reference data ../shared/reference/hessian_toolbox_ll_cdw not found next to the repository",
)

THRESHOLDS = {"1": 2, "0.1": 12, "0.01": 51, "0.001": 99}
QUOTED_T1_TRUE = {0: 0.079444, 21: 0.71610, 40: 0.19783}


@pytest.fixture(scope="module")
def toolbox():
    model = Conv1DToolbox()
    model.load_state_dict(torch.load(REF / "Conv1D_original_l005_12site.pt", map_location="cpu"))
    test = np.loadtxt(REF / "ED_size12_full_even_more_test.csv", delimiter=",")
    validation = np.loadtxt(REF / "ED_size12_full_validation.csv", delimiter=",")
    amplitudes = np.concatenate([test[:, 1:], validation[:, 1:]])
    lo, hi = amplitudes.min(), amplitudes.max()
    x = torch.tensor((test[:, 1:] - lo) / (hi - lo), dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(test[:, 0]).long()
    H = hessext.Hessian.from_matrix(REF / "Conv1D_original_l005_12site_hessian.npy")
    return model, x, y, H


def _published(t: str, version: str) -> np.ndarray:
    return np.loadtxt(REF / "published_extrapolation_scores" / f"LEES_t{t}_{version}.txt")


@pytest.mark.parametrize("version", ["truever", "minver"])
@pytest.mark.parametrize("t", list(THRESHOLDS))
def test_published_extrapolation_scores(toolbox, t, version):
    model, x, y, H = toolbox
    scores = hessext.extrapolation_score(
        model,
        (x, y),
        hessian=H,
        threshold=float(t),
        min_removed=2,
        gradient="loss",
        label="true" if version == "truever" else "predicted",
        loss_fn=nn.CrossEntropyLoss(),
        regularizer=L2.from_weight_decay(0.05, 1000),
    )
    published = _published(t, version)
    assert scores.shape == (50,)
    assert scores.n_removed == THRESHOLDS[t]
    rel = np.abs(scores.numpy() / published - 1)
    assert rel.max() <= 1e-4, f"worst row {rel.argmax()}: {rel.max():.2e}"


def test_quoted_rows(toolbox):
    model, x, y, H = toolbox
    scores = hessext.extrapolation_score(
        model,
        (x, y),
        hessian=H,
        threshold=1.0,
        gradient="loss",
        label="true",
        loss_fn=nn.CrossEntropyLoss(),
        regularizer=L2.from_weight_decay(0.05, 1000),
    )
    for row, value in QUOTED_T1_TRUE.items():
        assert abs(float(scores[row]) / value - 1) <= 1e-4


def test_matrix_free_lanczos_gives_the_same_scores(toolbox):
    """A HessianOperator (Lanczos: only the removed top eigenvectors) reproduces the dense path."""
    model, x, y, H = toolbox
    kwargs = dict(
        gradient="loss",
        label="true",
        loss_fn=nn.CrossEntropyLoss(),
        regularizer=L2.from_weight_decay(0.05, 1000),
    )
    dense = hessext.extrapolation_score(model, (x, y), hessian=H, n_removed=12, **kwargs)
    lanczos = hessext.extrapolation_score(model, (x, y), hessian=H.operator(), n_removed=12, **kwargs)
    published = _published("0.1", "truever")
    assert np.abs(lanczos.numpy() / published - 1).max() <= 1e-4
    torch.testing.assert_close(lanczos, dense, rtol=1e-6, atol=0)
    by_threshold = hessext.extrapolation_score(model, (x, y), hessian=H.operator(), threshold=1.0, **kwargs)
    assert by_threshold.n_removed == 2
    assert np.abs(by_threshold.numpy() / _published("1", "truever") - 1).max() <= 1e-4


def test_reference_model_untouched(toolbox):
    model, x, y, H = toolbox
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hessext.extrapolation_score(model, x, hessian=H, threshold=0.1)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
