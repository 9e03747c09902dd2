"""Shared test fixtures: the reference data folder from the original toolbox, and a way to run
code with the compiled core disabled (fallback parity)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from cases import shared_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared/reference (the original toolbox's model and Hessian) is not present")
    return shared / "reference" / "hessian_toolbox_ll_cdw"


def run_python(code: str, *, disable_ext: bool, timeout: float = 300) -> str:
    """Run ``code`` in a fresh interpreter (optionally with HESSEXT_DISABLE_EXT=1) and return its
    stdout. Used to check that the pure-torch fallback gives the same answers as the kernels."""
    env = dict(os.environ)
    if disable_ext:
        env.pop("HESSEXT_REQUIRE_EXT", None)
        env["HESSEXT_DISABLE_EXT"] = "1"
    else:
        env.pop("HESSEXT_DISABLE_EXT", None)
    # not the repository as working directory: `python -c` would import the source tree's hessext
    # (which has no compiled core) instead of the installed package
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=timeout, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed:\n{result.stderr}")
    return result.stdout


@pytest.fixture
def restore_threads():
    """Tests that change torch's thread count put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def pytest_report_header(config):
    import hessext

    return "hessext: " + json.dumps({k: v for k, v in hessext.info().items()
                                     if k in ("compiled_core", "cpu_kernels", "cuda_kernel_ops")})
