"""The experiments of ``hessext reproduce boundary``, as data (one dict per experiment, like the
paper's configs/ folder; docs/boundary-paper.md).

Each entry names its dataset (hessext/apps/boundary_study.py DATASETS), architecture, loss,
optimiser, the epoch budget of the full run (the paper's) and of ``--quick``, and its training
protocol:

- ``normal``: a fresh seeded initialisation, the true labels;
- ``random_labels``: a fresh initialisation, the labels of the whole set permuted once
  (numpy RandomState(label_seed).permutation, the paper's fixed permutation);
- ``adversarial_init``: start from the final model of ``init_from`` (the random-label model of
  the same seed) and train on the true labels;
- ``large_norm``: a fresh initialisation with every parameter multiplied by
  ‖θ_{norm_from}‖ / ‖θ_init‖ (the random-label model's norm), then the true labels;
- ``noisy_init``: start from ``init_from`` (the model trained on the noisy checkerboard) and
  train on the linear checkerboard.

The full run is the paper's protocol: MLP 2-100-100-C (P = 10,703 for C = 3), the CNN for the
image set (P = 7,203), 1-10-2 for the intro set; plain SGD lr 0.02, batch 64, mean
cross-entropy (intro: lr 0.002, full batch of 6); epochs 2,000 / 300,000 / 20,000 / 1,000 for
normal / random labels / adversarial init / large norm on the 2-D sets and 500 / 5,000 / 1,500
on the images. ``--quick`` keeps every experiment, dataset and protocol but trains the paper's
small-hidden variant (MLP 2-30-30-C, configs/gauss/normal_training_small_hidden.json of the
paper) for fewer epochs (the 2-D normal runs keep the paper's 2,000), and the image CNN for fewer
epochs on the first 60 images of each digit (QUICK_IMAGES_PER_CLASS).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["EXPERIMENTS", "PROTOCOLS", "QUICK_IMAGES_PER_CLASS", "resolve", "order_with_dependencies"]

QUICK_IMAGES_PER_CLASS = 60

PROTOCOLS = ("normal", "random_labels", "adversarial_init", "large_norm", "noisy_init")

_SGD = {"name": "sgd", "lr": 0.02, "batch_size": 64, "momentum": 0.0, "weight_decay": 0.0}
_MLP = {"name": "mlp", "width": {"full": 100, "quick": 30}}
_CNN = {"name": "cnn"}


def _exp(dataset, protocol, full, quick, *, arch=_MLP, optimizer=_SGD, **extra) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "architecture": arch,
        "loss": "ce",
        "optimizer": optimizer,
        "epochs": {"full": full, "quick": quick},
        "protocol": protocol,
        **extra,
    }


# fmt: off
EXPERIMENTS: dict[str, dict[str, Any]] = {
    # three Gaussians (the paper's main set): normal vs the three initialisations
    "gauss_normal": _exp("gauss", "normal", 2000, 2000),
    "gauss_random_labels": _exp("gauss", "random_labels", 300_000, 60_000, label_seed=28),
    "gauss_adversarial_init": _exp(
        "gauss", "adversarial_init", 20_000, 6000, init_from="gauss_random_labels"
    ),
    "gauss_large_norm": _exp("gauss", "large_norm", 1000, 1000, norm_from="gauss_random_labels"),
    # more classes / fewer classes: the C − 1 rule
    "hierarchical_normal": _exp("hierarchical", "normal", 2000, 2000),
    "hierarchical2_normal": _exp("hierarchical2", "normal", 2000, 2000),
    # curved boundaries
    "circles_normal": _exp("circles", "normal", 2000, 2000),
    "moons_normal": _exp("moons", "normal", 2000, 2000),
    # checkerboard: a simple boundary reached normally vs from a noisy start (margin)
    "checkerboard_normal": _exp("checkerboard_linear", "normal", 2000, 2000),
    "checkerboard_noisy": _exp("checkerboard_noisy", "normal", 2000, 2000),
    "checkerboard_noisy_init": _exp(
        "checkerboard_linear", "noisy_init", 2000, 2000, init_from="checkerboard_noisy"
    ),
    # the image set (digits 0/1/7) and its CNN
    "digits017_normal": _exp("digits017", "normal", 500, 200, arch=_CNN),
    "digits017_random_labels": _exp("digits017", "random_labels", 5000, 1000, arch=_CNN, label_seed=28),
    "digits017_adversarial_init": _exp(
        "digits017", "adversarial_init", 1500, 300, arch=_CNN, init_from="digits017_random_labels"
    ),
    # the introduction's 1-D example
    "intro1d_normal": _exp(
        "intro1d", "normal", 45_000, 15_000,
        arch={"name": "mlp", "width": {"full": 10, "quick": 10}, "layers": 1},
        optimizer={**_SGD, "lr": 0.002, "batch_size": 6},
    ),
}
# fmt: on


def resolve(name: str, protocol: str, *, image_source: str = "digits017") -> dict[str, Any]:
    """The config of experiment ``name`` for ``protocol`` ('full' or 'quick'; 'test' is
    'quick' with every budget cut to a few epochs, for the test suite): epochs and width become
    numbers. ``image_source`` 'mnist017' swaps the built-in digits for the user's MNIST file
    (the experiment names then start with mnist017_)."""
    base = name.replace("mnist017_", "digits017_") if image_source == "mnist017" else name
    if base not in EXPERIMENTS:
        raise KeyError(name)
    if protocol not in ("full", "quick", "test"):
        raise ValueError(f"resolve: protocol must be 'full', 'quick' or 'test', got {protocol!r}")
    cfg = copy.deepcopy(EXPERIMENTS[base])
    budget = "full" if protocol == "full" else "quick"
    epochs = cfg["epochs"][budget]
    if protocol == "test":
        epochs = max(2, epochs // 100)
    cfg["epochs"] = epochs
    arch = cfg["architecture"]
    if arch["name"] == "mlp":
        arch["width"] = arch["width"][budget] if protocol != "test" else min(arch["width"]["quick"], 12)
    if cfg["dataset"] == "digits017":
        cfg["dataset"] = image_source
        # None: the paper's count (all 178 built-in 0s…, or 300 MNIST images per digit)
        cfg["images_per_class"] = None if protocol == "full" else QUICK_IMAGES_PER_CLASS
    for key in ("init_from", "norm_from"):
        if key in cfg and image_source == "mnist017":
            cfg[key] = cfg[key].replace("digits017_", "mnist017_")
    return cfg


def order_with_dependencies(names: list[str], image_source: str = "digits017") -> list[str]:
    """``names`` plus the experiments their models start from, dependencies first."""
    out: list[str] = []

    def visit(n: str) -> None:
        cfg = resolve(n, "full", image_source=image_source)
        for key in ("init_from", "norm_from"):
            if key in cfg:
                visit(cfg[key])
        if n not in out:
            out.append(n)

    for n in names:
        visit(n)
    return out
