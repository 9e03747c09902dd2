"""The 1-D regression set of the twin-network comparison."""

import math

import pytest
import torch

from hessext.datasets import regression_1d, regression_1d_function
from hessext.datasets.regression1d import REGRESSION_1D_RANGE


def test_values_range_noise_and_seeding():
    x, y = regression_1d(20000, seed=0, noise=0.2)
    assert x.shape == (20000, 1) and y.shape == (20000,) and x.dtype == y.dtype == torch.float64
    assert REGRESSION_1D_RANGE[0] <= x.min() and x.max() <= REGRESSION_1D_RANGE[1]
    resid = y - regression_1d_function(x[:, 0])
    # the noise's sample std, to its standard error 0.2/√(2n) ≈ 1e-3
    assert resid.std().item() == pytest.approx(0.2, abs=5e-3)
    assert regression_1d_function(torch.tensor([0.5])).item() == pytest.approx(math.sin(1.5) + 0.125)
    again = regression_1d(20000, seed=0, noise=0.2)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    x2, y2 = regression_1d(10, seed=1, noise=0.0, low=-3.0, high=-2.0)
    assert (x2 < -2).all() and torch.equal(y2, regression_1d_function(x2[:, 0]))


def test_bad_input():
    with pytest.raises(ValueError, match="n must be >= 1"):
        regression_1d(0, seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        regression_1d(5, seed=1.5)
    with pytest.raises(ValueError, match="need low < high"):
        regression_1d(5, seed=0, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        regression_1d(5, seed=0, noise=-0.1)
