"""Typed results and their JSON form.

Every study writes its numbers from a typed results object (a dataclass, nested dataclasses,
lists and dicts of them): the same object the report is written from is what ``results.json``
is made of, so the figures, the text and the file can never disagree. ``to_json`` turns it
into plain JSON values (tensors and numpy arrays become lists, NaN and infinities stay as
JSON's non-standard NaN/Infinity tokens, which Python's json reads back); ``mean_std``
summarises a number over seeds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["to_json", "write_json", "read_json", "MeanStd", "mean_std"]


def to_json(obj: Any) -> Any:
    """``obj`` as plain JSON values: dataclasses → dicts (field order kept), tensors and arrays
    → (nested) lists, numpy/torch scalars → Python numbers, tuples → lists, dict keys → str."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, torch.Tensor):
        return to_json(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.ndim else obj.item()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"to_json: cannot write {type(obj).__name__} into results.json")


def write_json(path, obj: Any) -> Path:
    """Write ``to_json(obj)`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_json(obj), indent=1) + "\n")
    tmp.replace(path)
    return path


def read_json(path) -> Any:
    """The JSON value stored at ``path``."""
    return json.loads(Path(path).read_text())


@dataclasses.dataclass(frozen=True)
class MeanStd:
    """A number over seeds: mean, sample standard deviation (n - 1; NaN for one seed), n."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        if self.n == 1 or math.isnan(self.std):
            return f"{self.mean:.4g}"
        return f"{self.mean:.4g} ± {self.std:.2g}"


def mean_std(values: Iterable[float]) -> MeanStd:
    """MeanStd of the finite-or-not values given (NaNs propagate: a failed seed shows)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_std: no values")
    std = float(v.std(ddof=1)) if v.size > 1 else float("nan")
    return MeanStd(float(v.mean()), std, int(v.size))
