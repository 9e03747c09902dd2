"""The image set of the decision-boundary study: the built-in digits 0/1/7 and the user-supplied
MNIST file through the same selection, against the paper's definition (the first n images of
each digit, in class order, labels 0, 1, 2, raw 0-255 pixels, 1×28×28)."""

import gzip

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hessext.datasets import digits


def _fake_mnist(n=40, seed=0):
    rs = np.random.RandomState(seed)
    images = rs.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
    labels = rs.randint(0, 10, size=n)
    return images, labels


def _paper_selection(images, labels, classes, per_class):
    # MNIST2DDataset: x_idx = cat over classes of the first per_class indices of each class,
    # labels renamed to their position in class_list
    idx = np.concatenate([np.nonzero(labels == c)[0][:per_class] for c in classes])
    new = np.concatenate([[k] * per_class for k in range(len(classes))])
    return images[idx], new


def test_mnist_npz_and_idx_files(tmp_path):
    images, labels = _fake_mnist(400)
    per = int(min((labels == c).sum() for c in (0, 1, 7)))
    want_x, want_y = _paper_selection(images, labels, (0, 1, 7), per)
    npz = tmp_path / "mnist-test.npz"
    np.savez(npz, images=images, labels=labels)
    stem = "t10k-images-idx3-ubyte.gz"
    with gzip.open(tmp_path / stem, "wb") as f:
        f.write(
            bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape) + images.tobytes()
        )
    with gzip.open(tmp_path / stem.replace("images-idx3", "labels-idx1"), "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes())
    for path in (npz, tmp_path / stem):
        x, y = digits.mnist017(path, per_class=per)
        assert x.shape == (3 * per, 1, 28, 28) and x.dtype == torch.float32
        assert torch.equal(x[:, 0], torch.from_numpy(want_x).float()) and y.tolist() == want_y.tolist()


def test_mnist_bad_files(tmp_path):
    images, labels = _fake_mnist(50)
    bad = tmp_path / "x.npz"
    np.savez(bad, images=images)
    with pytest.raises(ValueError, match="lacks"):
        digits.mnist017(bad)
    np.savez(bad, images=images.astype(np.float32), labels=labels)
    with pytest.raises(ValueError, match="uint8"):
        digits.mnist017(bad)
    np.savez(bad, images=images, labels=labels)
    with pytest.raises(ValueError, match="only"):
        digits.mnist017(bad, per_class=300)
    with pytest.raises(ValueError, match="no such file"):
        digits.mnist017(tmp_path / "missing.npz")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="IDX"):
        digits.mnist017(tmp_path / "notes.txt")


def test_builtin_digits_017():
    from sklearn.datasets import load_digits

    x, y = digits.digits017()
    assert x.shape == (534, 1, 28, 28) and x.dtype == torch.float32
    assert torch.bincount(y).tolist() == [178, 178, 178]
    assert float(x.min()) >= 0 and float(x.max()) <= 255
    d = load_digits()
    src, ref_y = _paper_selection(d.images, d.target, (0, 1, 7), 178)
    assert y.tolist() == ref_y.tolist()
    # the 8x8 digits scaled to 0-255 and resized: averaging the 28x28 image back onto the 8x8
    # cells recovers the original to within the interpolation's smoothing (bilinear resizing
    # keeps a cell's mean up to the mixing with its neighbours, < 1/4 of the 0-255 range)
    back = F.adaptive_avg_pool2d(x, 8)[:, 0]
    orig = torch.from_numpy(src).float() * 255 / 16
    assert float((back - orig).abs().mean()) < 0.1 * 255
    assert float(torch.corrcoef(torch.stack([back.flatten(), orig.flatten()]))[0, 1]) > 0.95
