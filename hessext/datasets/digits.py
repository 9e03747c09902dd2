"""The image set of the decision-boundary study: three digit classes, 0, 1 and 7.

The paper (Sabanayagam et al. 2023; docs/boundary-paper.md) takes the first 300 images of each
of the digits 0, 1, 7 from the MNIST **test** split, in that class order, labels 0, 1, 2, as raw
pixels in [0, 255] (float, 1×28×28, no normalisation). MNIST cannot be downloaded at run time,
so there are two sources through the same selection:

- :func:`digits017` (built in): scikit-learn's bundled 8×8 digits (1,797 images, values 0–16),
  the first ``per_class`` images of each class (default 178: all the 0s, the smallest of the
  three classes, so the classes are balanced as in the paper); each image is scaled to [0, 255] and
  bilinearly resized to 28×28, so that the paper's CNN (hessext.models.MNISTCNN3, P = 7,203)
  applies unchanged.
- :func:`mnist017` (the original): a user-supplied MNIST file, format below (MNIST_FORMAT).

Both return x [N, 1, 28, 28] float32 in [0, 255] ordered class by class, y [N] int64 in
{0, …, C−1} (the position of the digit in ``classes``).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["MNIST_FORMAT", "digits017", "mnist017", "read_mnist", "select_classes"]

MNIST_FORMAT = """\
MNIST file (--mnist FILE): either
  * an .npz file with arrays `images` (uint8 [N, 28, 28], pixels 0-255) and `labels`
    (integers [N], the digit 0-9), e.g. the test split written by
      d = torchvision.datasets.MNIST(root, train=False, download=True)
      numpy.savez("mnist-test.npz", images=d.data.numpy(), labels=d.targets.numpy())
  * or the original IDX images file (t10k-images-idx3-ubyte, optionally .gz) with its
    labels file beside it (the same name with images-idx3 replaced by labels-idx1).
The paper uses the TEST split (10,000 images): the first 300 images of each digit 0, 1, 7."""


def select_classes(images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int], per_class: int):
    """The first ``per_class`` images of each digit in ``classes``, class after class, relabelled
    0, 1, …: (images[idx], new labels [len(classes)·per_class] int64). images: [N, ...]; labels:
    [N] digits."""
    fn = "select_classes"
    if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
        raise ValueError(f"{fn}: per_class must be a positive int, got {per_class!r}")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"{fn}: classes must be at least two distinct digits, got {tuple(classes)}")
    idx = []
    for c in classes:
        found = torch.nonzero(labels == c)[:, 0]
        if len(found) < per_class:
            raise ValueError(f"{fn}: digit {c} has only {len(found)} images, {per_class} requested")
        idx.append(found[:per_class])
    index = torch.cat(idx)
    new = torch.arange(len(classes), dtype=torch.int64).repeat_interleave(per_class)
    return images[index], new


def digits017(classes: Sequence[int] = (0, 1, 7), per_class: int = 178):
    """The built-in stand-in for the paper's MNIST-017: scikit-learn's bundled 8×8 digits, the
    first ``per_class`` images of each digit in ``classes``, pixel values 0–16 scaled to 0–255 and
    bilinearly resized (torch ``interpolate``, align_corners=False) to 28×28.
    Returns x [C·per_class, 1, 28, 28] float32 in [0, 255], y [C·per_class] int64."""
    # scikit-learn is the data sets' documented lazy load (python_tests/test_architecture.py)
    from sklearn import datasets as skd

    d = skd.load_digits()
    images = torch.from_numpy(d.images.astype(np.float32))  # [1797, 8, 8], values 0..16
    x, y = select_classes(images, torch.from_numpy(d.target.astype(np.int64)), classes, per_class)
    x = F.interpolate(x.unsqueeze(1) * (255.0 / 16.0), size=(28, 28), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 255.0).contiguous(), y


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"--mnist {path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"--mnist {path}: IDX header says {shape}, the file holds {body.size} values")
    return body.reshape(shape)


def read_mnist(path) -> tuple[torch.Tensor, torch.Tensor]:
    """A user's MNIST file (MNIST_FORMAT): (images uint8 [N, 28, 28], labels int64 [N]).
    Raises ValueError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--mnist {path}: no such file")
    if path.suffix == ".npz":
        with np.load(path) as z:
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise ValueError(
                    f"--mnist {path}: needs arrays 'images' and 'labels', lacks {sorted(missing)}"
                )
            images, labels = z["images"], z["labels"]
    else:
        name = path.name
        if "images-idx3" not in name:
            raise ValueError(
                f"--mnist {path}: expected an .npz file or an IDX images file (*images-idx3*)\n{MNIST_FORMAT}"
            )
        images = _read_idx(path)
        labels = _read_idx(path.with_name(name.replace("images-idx3", "labels-idx1")))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(
            f"--mnist {path}: images must be uint8 [N, 28, 28], got {images.dtype} {tuple(images.shape)}"
        )
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"--mnist {path}: labels must be integers [N={images.shape[0]}], got "
            f"{labels.dtype} {tuple(labels.shape)}"
        )
    return torch.from_numpy(np.array(images)), torch.from_numpy(labels.astype(np.int64))


def mnist017(path, classes: Sequence[int] = (0, 1, 7), per_class: int = 300):
    """The paper's MNIST-017 from a user-supplied file (MNIST_FORMAT; the paper uses the test
    split): the first ``per_class`` images of each digit in ``classes``, raw pixels as float32.
    Returns x [C·per_class, 1, 28, 28] float32 in [0, 255], y [C·per_class] int64."""
    images, labels = read_mnist(path)
    x, y = select_classes(images, labels, classes, per_class)
    return x.unsqueeze(1).to(torch.float32), y
