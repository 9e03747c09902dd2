"""Small image-classification data for the SmoothHess P-MSE and attack experiments.

The paper used MNIST and Fashion-MNIST (784 pixels in [0, 1], an MLP 784-500-300-250-250-250-10).
Those are downloads; the built-in stand-in is scikit-learn's bundled 8×8 handwritten digits
(1,797 images, 64 pixels, 10 classes; shipped inside the scikit-learn wheel, nothing is
fetched), scaled to [0, 1] by its maximum 16. A user who has MNIST or Fashion-MNIST passes the
file to the same loader:

* ``.npz`` with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` (the layout of the
  common ``mnist.npz``): images [N, 28, 28] or [N, 784], uint8 0-255 or floats in [0, 1];
  labels [N] integers;
* ``.pt`` (torch.save of a dict with the same four keys, tensors or arrays).

Images are flattened to [N, D] float32 in [0, 1] (uint8 data is divided by 255).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["ImageData", "load_images", "DATA_FORMAT"]

DATA_FORMAT = (
    "an .npz (or torch .pt dict) with x_train, y_train, x_test, y_test: images [N, 28, 28] or "
    "[N, 784], uint8 0-255 or floats in [0, 1]; integer labels [N]"
)
_KEYS = ("x_train", "y_train", "x_test", "y_test")


class ImageData(NamedTuple):
    """x_train [N, D] / x_test [M, D] float32 in [0, 1]; y_train [N] / y_test [M] int64;
    name: where the data came from."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str


def _digits(seed: int, test_fraction: float) -> ImageData:
    from sklearn.datasets import load_digits  # the only sklearn use: its bundled digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(int(seed)))
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    return ImageData(x[train], y[train], x[test], y[test], "scikit-learn digits (8×8)")


def _images(arr, key: str, path: Path) -> torch.Tensor:
    a = np.asarray(arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr)
    if a.ndim < 2:
        raise ValueError(f"{path}: {key} must be images [N, H, W] or [N, D], got shape {a.shape}")
    a = a.reshape(len(a), -1)
    if a.dtype == np.uint8:
        a = a / 255.0
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError(f"{path}: {key} must be uint8 0-255 or floats in [0, 1]")
    return torch.from_numpy(a)


def _labels(arr, key: str, path: Path, n: int) -> torch.Tensor:
    a = np.asarray(arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{path}: {key} must be [{n}] integer labels, got {a.dtype} {a.shape}")
    return torch.from_numpy(a.astype(np.int64))


def load_images(path=None, *, seed: int = 0, test_fraction: float = 0.2) -> ImageData:
    """The P-MSE/attack data: scikit-learn's digits when ``path`` is None (a seeded split with
    ``test_fraction`` held out), else the user's MNIST/FMNIST file (see DATA_FORMAT; its own
    train/test split is kept). Raises ValueError naming the file and what is wrong."""
    if path is None:
        return _digits(seed, test_fraction)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"load_images: {path} is not a file ({DATA_FORMAT})")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
    elif path.suffix == ".pt":
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(stored, dict):
            raise ValueError(f"{path}: expected a dict with {', '.join(_KEYS)}")
    else:
        raise ValueError(f"load_images: {path}: unknown suffix {path.suffix!r}; expected {DATA_FORMAT}")
    missing = [k for k in _KEYS if k not in stored]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)} (expected {DATA_FORMAT})")
    x_train = _images(stored["x_train"], "x_train", path)
    x_test = _images(stored["x_test"], "x_test", path)
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"{path}: x_train has {x_train.shape[1]} pixels, x_test {x_test.shape[1]}")
    y_train = _labels(stored["y_train"], "y_train", path, len(x_train))
    y_test = _labels(stored["y_test"], "y_test", path, len(x_test))
    return ImageData(x_train, y_train, x_test, y_test, path.name)
