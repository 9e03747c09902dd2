"""out= strips and resuming after an interruption; the data-parallel assembly over 2 processes."""

import json
import os
import tempfile

import numpy as np
import pytest
import torch
from torch import nn

import hessext
from hessext.curvature import assembly
from hessext.regularizers import L2
from hessext.testing import (
    CNN1d,
    ce,
    data_for,
    mlp,
    reference_ggn,
    reference_hessian,
    relative_error,
    run_distributed,
)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_resume_after_interruption_gives_identical_matrix(tmp_path, kind, monkeypatch):
    torch.manual_seed(0)
    model = mlp((4, 6, 5, 3), nn.Tanh()).double()
    x, y, _ = data_for("mlp", 15)
    data = [(x[:6], y[:6]), (x[6:], y[6:])]
    build = getattr(hessext, kind)
    full = build(model, ce, data, regularizer=L2(0.01), strip_width=10, progress=False)

    def interrupt(idx):
        if idx == 2:
            raise Interrupted

    monkeypatch.setattr(assembly, "_after_strip_hook", interrupt)
    with pytest.raises(Interrupted):
        build(model, ce, data, regularizer=L2(0.01), strip_width=10, out=tmp_path, progress=False)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert len(man["done"]) == 3 and man["P"] == full.num_params
    monkeypatch.setattr(assembly, "_after_strip_hook", None)
    resumed = build(model, ce, data, regularizer=L2(0.01), strip_width=10, out=tmp_path, progress=False)
    assert resumed.info["resumed_strips"] == 3
    assert torch.equal(resumed.dense(), full.dense())
    # the documented format reassembles with numpy alone
    assert torch.equal(hessext.curvature.load_strips(tmp_path), full.dense())
    first = np.load(tmp_path / "strip_0000000_0000010.npy")
    assert first.dtype == np.float64 and first.shape == (10, 10)
    # a different problem in the same directory is refused, not mixed in
    with pytest.raises(ValueError, match="different assembly"):
        build(model, ce, data, strip_width=10, out=tmp_path, progress=False)


WORKER = """
import json, torch, torch.distributed as dist, hessext
from hessext.regularizers import L2
from hessext.testing import CNN1d, ce, data_for, init_gloo, leave_gloo
rank, world = init_gloo()
torch.manual_seed(0)
model = CNN1d().double()
x, y, _ = data_for("cnn1d", 13)
data = [(x[:4], y[:4]), (x[4:5], y[4:5]), (x[5:], y[5:])]
H = getattr(hessext, KIND)(model, ce, data, regularizer=L2(0.02), strip_width=9, progress=False)
if rank == 0:
    torch.save({"H": H.dense(), "n": H.info["n"], "world": H.info["world_size"]}, OUT)
dist.barrier()
leave_gloo()
"""


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_two_process_gloo_matches_single_process(kind):
    torch.manual_seed(0)
    model = CNN1d().double()
    x, y, _ = data_for("cnn1d", 13)
    with tempfile.TemporaryDirectory() as d:
        out_file = os.path.join(d, "H.pt")
        run_distributed(WORKER.replace("KIND", repr(kind)).replace("OUT", repr(out_file)), world=2)
        got = torch.load(out_file)
    assert got["world"] == 2 and got["n"] == 13
    ref = (
        reference_hessian(model, ce, (x, y), l2=0.02)
        if kind == "hessian"
        else reference_ggn(model, "ce", (x, y), l2=0.02)
    )
    assert relative_error(got["H"], ref, "max") <= 1e-10
    single = getattr(hessext, kind)(model, ce, (x, y), regularizer=L2(0.02), progress=False)
    assert relative_error(got["H"], single.dense(), "max") <= 1e-12
