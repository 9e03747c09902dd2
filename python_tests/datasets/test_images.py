"""The digits loader and the user's MNIST/FMNIST file through the same loader."""

import numpy as np
import pytest
import torch

from hessext.datasets.images import load_images


def test_builtin_digits_split():
    d = load_images(seed=0)
    assert d.x_train.shape[1] == 64 and d.x_train.dtype == torch.float32
    assert len(d.y_train) + len(d.y_test) == 1797
    assert abs(len(d.y_test) - 0.2 * 1797) <= 1
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert sorted(d.y_train.unique().tolist()) == list(range(10))
    again = load_images(seed=0)
    assert torch.equal(again.x_test, d.x_test)
    assert not torch.equal(load_images(seed=1).y_test, d.y_test)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_user_file(tmp_path, suffix):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 30),
        "x_test": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 12),
    }
    path = tmp_path / f"mnist{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    d = load_images(path)
    assert d.x_train.shape == (30, 784) and d.x_test.shape == (12, 784)
    np.testing.assert_allclose(d.x_train[3].numpy(), arrays["x_train"][3].reshape(-1) / 255.0, rtol=1e-6)
    assert d.y_test.tolist() == arrays["y_test"].tolist()
    assert d.name == path.name


def test_user_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        load_images(tmp_path / "absent.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((3, 4)), y_train=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="missing x_test, y_test"):
        load_images(bad)
    wrong = tmp_path / "wrong.npz"
    np.savez(
        wrong,
        x_train=np.full((3, 4), 2.0),
        y_train=np.zeros(3, dtype=int),
        x_test=np.zeros((1, 4)),
        y_test=[0],
    )
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        load_images(wrong)
    with pytest.raises(ValueError, match="suffix"):
        (tmp_path / "x.csv").write_text("1,2")
        load_images(tmp_path / "x.csv")
