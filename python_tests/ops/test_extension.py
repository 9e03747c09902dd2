"""The compiled core: what was built is what info() says, and a missing or stale core is never
silently replaced by the fallback when the kernels are required."""

from __future__ import annotations

import json

import pytest
import torch

import hessext
from hessext import _extension
from hessext.testing import run_python


def test_info_reports_the_build():
    data = hessext.info()
    assert data["hessext"] == hessext.__version__
    assert data["torch"] == torch.__version__
    if _extension.loaded:
        assert data["built_against_torch"] == torch.__version__
        # every registered op has a CPU kernel: the CPU build is complete
        assert sorted(data["cpu_kernels"]) == _extension.registered_ops()
        assert "linear_weight_grad" in data["cpu_kernels"]
        assert data["threads"] >= 1
    else:
        assert data["cpu_kernels"] == [] and data["cuda_kernel_ops"] == []


def test_info_command_line_json():
    out = run_python("from hessext._buildinfo import main; main(['--json'])", disable_ext=False)
    assert json.loads(out)["hessext"] == hessext.__version__


def test_disable_flag_turns_kernels_off():
    out = run_python("import hessext, json; print(json.dumps(hessext.info()))", disable_ext=True)
    data = json.loads(out)
    assert data["compiled_core"] == "disabled by HESSEXT_DISABLE_EXT=1"
    assert data["cpu_kernels"] == []


def test_contradicting_flags_are_an_error(monkeypatch):
    monkeypatch.setenv("HESSEXT_DISABLE_EXT", "1")
    monkeypatch.setenv("HESSEXT_REQUIRE_EXT", "1")
    with pytest.raises(ImportError, match="contradict"):
        _extension._load()


@pytest.mark.skipif(not _extension.loaded, reason="compiled core not built")
def test_stale_build_fails_loudly(monkeypatch):
    # a core built against another torch must be an ImportError, never the fallback
    monkeypatch.delenv("HESSEXT_DISABLE_EXT", raising=False)
    monkeypatch.setattr(torch, "__version__", "0.0.1-other")
    with pytest.raises(ImportError, match="built against torch"):
        _extension._load()


def test_require_flag_means_the_core_is_loaded(monkeypatch):
    # CI runs with HESSEXT_REQUIRE_EXT=1; then the kernels, not the fallback, are under test
    import os

    if os.environ.get("HESSEXT_REQUIRE_EXT") == "1":
        assert _extension.loaded
