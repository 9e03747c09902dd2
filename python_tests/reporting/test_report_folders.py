"""Report and work folders never remove or overwrite what hessext did not write; cached pieces
are reused only for the inputs they were computed from; results serialise to plain JSON."""

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from hessext.cli import main
from hessext.reporting.report import MARKER, Report, UserError
from hessext.reporting.results import mean_std, to_json, write_json
from hessext.reporting.workdir import WorkDir, fingerprint_of


def _write(out, text="x"):
    with Report(out, "t") as rep:
        rep.text(text)
        rep.finish()


def test_report_refuses_a_foreign_folder_and_keeps_its_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="hessext did not write.*notes.txt"):
        Report(tmp_path, "t")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_report_replaces_its_own_report_only(tmp_path):
    out = tmp_path / "rep"
    _write(out, "first")
    assert (out / MARKER).exists()
    _write(out, "second")  # its own: replaced atomically
    assert "second" in (out / "report.md").read_text()
    (out / "mine.txt").write_text("user file")
    with pytest.raises(UserError, match="mine.txt"):
        _write(out, "third")
    assert (out / "mine.txt").read_text() == "user file"
    assert "second" in (out / "report.md").read_text()


@pytest.mark.parametrize("command", [["demo", "--quick"], ["demo", "boundary", "--quick"]])
def test_cli_refuses_out_dot_with_exit_code_2(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("1,2\n")
    assert main([*command, "--out", ".", "--no-progress"]) == 2
    assert "hessext did not write" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--threads", "0"],
        ["demo", "--threads", "-1"],
        ["analyze", "--model", "m", "--data", "d", "--bootstrap", "1"],
        ["analyze", "--model", "m", "--data", "d", "--bootstrap", "-3"],
    ],
)
def test_cli_bad_numbers_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2
    assert "expected an integer >=" in capsys.readouterr().err


def test_workdir_claims_refuses_and_resumes(tmp_path):
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a.txt").write_text("a")
    with pytest.raises(UserError, match="a.txt"):
        WorkDir(tmp_path / "user", "boundary")
    wd = WorkDir(tmp_path / "w", "boundary")
    with pytest.raises(UserError, match="another study"):
        WorkDir(tmp_path / "w", "ssh")
    calls = []
    fp = fingerprint_of({"lr": 0.02, "seed": 1}, torch.arange(3))
    assert wd.cached("model-1", fp, lambda: calls.append(1) or {"w": torch.ones(2)})["w"].sum() == 2
    again = WorkDir(tmp_path / "w", "boundary")
    assert again.cached("model-1", fp, lambda: calls.append(2) or None)["w"].sum() == 2
    assert calls == [1]  # reused, not recomputed
    other = fingerprint_of({"lr": 0.02, "seed": 2}, torch.arange(3))
    assert again.load("model-1", other) is None  # other inputs: recomputed
    (again.cache / "model-1.pt").write_bytes(b"truncated")
    assert again.load("model-1", fp) is None  # damaged: recomputed


def test_fingerprints_see_exact_values():
    assert fingerprint_of(torch.tensor([1.0, 2.0])) != fingerprint_of(torch.tensor([2.0, 1.0]))
    assert fingerprint_of({"a": 1, "b": 2}) == fingerprint_of({"b": 2, "a": 1})


@dataclass
class _Inner:
    value: float
    curve: torch.Tensor


def test_results_to_plain_json(tmp_path):
    obj = {
        "seeds": [0, 1],
        "inner": _Inner(0.5, torch.tensor([1.0, float("nan")])),
        "np": np.float32(2.5),
        3: (1, 2),
        "summary": mean_std([1.0, 2.0, 3.0]),
    }
    data = json.loads((write_json(tmp_path / "r.json", obj)).read_text())
    assert data["inner"]["value"] == 0.5 and math.isnan(data["inner"]["curve"][1])
    assert data["np"] == 2.5 and data["3"] == [1, 2]
    assert data["summary"] == {"mean": 2.0, "std": 1.0, "n": 3}
    with pytest.raises(TypeError, match="cannot write object"):
        to_json(object())
