"""Shared test fixtures (the helpers and oracles themselves live in hessext.testing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import hessext
from hessext.testing import shared_dir


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared/reference (the original toolbox's model and Hessian) is not present")
    return shared / "reference" / "hessian_toolbox_ll_cdw"


@pytest.fixture
def restore_threads():
    """Tests that change torch's thread count put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def pytest_report_header(config):
    return "hessext: " + json.dumps(
        {k: v for k, v in hessext.info().items() if k in ("compiled_core", "cpu_kernels", "cuda_kernel_ops")}
    )
