"""``hessext analyze`` on saved models (TorchScript and state dict + --arch), and bad inputs:
one-line errors, exit code 2, and no report folder (not even a partial one) left behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hessext.cli import main
from hessext.models import Conv1DToolbox, mlp


def _files(d):
    """The report's visible files (without hessext's marker, .hessext-report.json)."""
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("analyze")
    gen = torch.Generator().manual_seed(0)
    # a 3-class MLP (TorchScript) with its data as .npz
    model = mlp(4, 6, 3, seed=0)
    x = torch.randn(30, 4, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    torch.jit.save(torch.jit.script(model), d / "mlp.pt")
    np.savez(
        d / "mlp_data.npz",
        x_train=x[:20].numpy(),
        y_train=y[:20].numpy(),
        x_test=x[20:].numpy(),
        y_test=y[20:].numpy(),
    )
    # the toolbox's 1-D CNN as a state dict, data as .pt without y_test
    cnn = Conv1DToolbox(seed=0)
    torch.save(cnn.state_dict(), d / "cnn_state.pt")
    xc = torch.rand(6, 1, 924, generator=gen)
    torch.save(
        {"x_train": xc[:4], "y_train": torch.tensor([0, 1, 0, 1]), "x_test": xc[4:]}, d / "cnn_data.pt"
    )
    return d


def _check_report(out, capsys):
    assert _files(out) == [
        "influence.png",
        "report.html",
        "report.md",
        "rue.png",
        "score.png",
        "spectrum.png",
    ]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "damping δ for influence" in md and "AUROC" in md and "extrapolation-score threshold" in md
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_analyze_torchscript_npz(saved, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(
        [
            "analyze",
            "--model",
            str(saved / "mlp.pt"),
            "--data",
            str(saved / "mlp_data.npz"),
            "--out",
            str(out),
            "--no-progress",
            "--bootstrap",
            "10",
        ]
    )
    assert rc == 0
    _check_report(out, capsys)
    assert "P = 51, C = 3 classes" in (out / "report.md").read_text()


def test_analyze_state_dict_with_arch(saved, tmp_path, capsys):
    out = tmp_path / "rep"
    rc = main(
        [
            "analyze",
            "--model",
            str(saved / "cnn_state.pt"),
            "--arch",
            "hessext.models:Conv1DToolbox",
            "--data",
            str(saved / "cnn_data.pt"),
            "--out",
            str(out),
            "--no-progress",
            "--bootstrap",
            "5",
        ]
    )
    assert rc == 0
    _check_report(out, capsys)
    md = (out / "report.md").read_text()
    assert "P = 740" in md and "the model's predictions are used" in md


def _bad(tmp_path, capsys, args, fragment):
    out = tmp_path / "rep"
    rc = main(["analyze", *args, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and err.startswith("hessext analyze: error:"), err
    assert fragment in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rep.")]


def test_bad_inputs(saved, tmp_path, capsys):
    m, dnpz = str(saved / "mlp.pt"), str(saved / "mlp_data.npz")
    _bad(tmp_path, capsys, ["--model", str(tmp_path / "nope.pt"), "--data", dnpz], "model file not found")
    _bad(tmp_path, capsys, ["--model", m, "--data", str(tmp_path / "nope.npz")], "data file not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    _bad(tmp_path, capsys, ["--model", str(junk), "--data", dnpz], "cannot load")
    _bad(
        tmp_path,
        capsys,
        ["--model", str(junk), "--arch", "hessext.models:Conv1DToolbox", "--data", dnpz],
        "cannot load state dict",
    )
    _bad(
        tmp_path,
        capsys,
        ["--model", str(saved / "cnn_state.pt"), "--arch", "hessext.models:NoSuch", "--data", dnpz],
        "cannot import --arch",
    )
    # labels with more classes than the model has outputs
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    np.savez(tmp_path / "five.npz", x_train=x, y_train=np.arange(10) % 5, x_test=x)
    _bad(tmp_path, capsys, ["--model", m, "--data", str(tmp_path / "five.npz")], "C = 3 outputs")
    # inputs of the wrong shape for the model
    np.savez(tmp_path / "shape.npz", x_train=x[:, :3], y_train=np.zeros(10, int), x_test=x[:, :3])
    _bad(tmp_path, capsys, ["--model", m, "--data", str(tmp_path / "shape.npz")], "the model fails")
    # mismatched lengths, missing arrays
    np.savez(tmp_path / "len.npz", x_train=x, y_train=np.zeros(7, int), x_test=x)
    _bad(
        tmp_path,
        capsys,
        ["--model", m, "--data", str(tmp_path / "len.npz")],
        "x_train has 10 rows but y_train has 7",
    )
    np.savez(tmp_path / "miss.npz", x_train=x)
    _bad(tmp_path, capsys, ["--model", m, "--data", str(tmp_path / "miss.npz")], "lacks y_train, x_test")


def test_existing_report_survives_a_failed_run(saved, tmp_path, capsys):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    rc = main(
        [
            "analyze",
            "--model",
            str(tmp_path / "nope.pt"),
            "--data",
            str(saved / "mlp_data.npz"),
            "--out",
            str(out),
        ]
    )
    assert rc == 2 and (out / "keep.txt").read_text() == "old"


def test_error_midway_leaves_no_folder(saved, tmp_path, monkeypatch):
    from hessext.reporting import figures

    def broken(*a, **k):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(figures, "ood_histogram", broken)
    from hessext.apps.analyze import run_analyze

    with pytest.raises(RuntimeError, match="figure failed"):
        run_analyze(
            saved / "mlp.pt",
            saved / "mlp_data.npz",
            out=tmp_path / "rep",
            n_bootstrap=4,
            progress=False,
            quiet=True,
        )
    assert list(tmp_path.iterdir()) == []


def test_help_documents_the_data_format(capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    text = capsys.readouterr().out
    assert "x_train" in text and "y_test" in text and ".npz" in text and "weights_only" in text
