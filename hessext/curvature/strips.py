"""The on-disk form of a dense assembly (``out=``): finished strips, resumable and verified.

Format (numpy-loadable, nothing else needed to read it):
  manifest.json               {"format": "hessext-strips-v2", "P", "strip_width", "fingerprint",
                               "kind", "done": [[j0, j1], ...], "sha256": {"j0_j1": hex}, "info"}
  strip_<j0>_<j1>.npy         float64 [j1, j1 - j0] = H[0:j1, j0:j1] (upper triangle incl. diagonal)
Reassemble with ``hessext.curvature.load_strips(out)`` or by hand: H[:j1, j0:j1] = strip; then
H[j0:j1, :j0] = strip[:j0].T.

A rerun resumes only what provably belongs to the same assembly: the fingerprint is a SHA-256
over the exact bytes of the data and of every parameter and buffer, the model's structure (its
repr and module types), what the loss computes (its name and repr, and its values and first
two derivatives on the first examples' outputs), the regulariser and every option that changes
the matrix. A different fingerprint is refused; a strip whose bytes no longer match their
checksum (overwritten, truncated) is recomputed, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from hessext.curvature.problem import Problem, output_loss_derivatives

__all__ = ["FORMAT", "StripStore", "fingerprint", "load_strips"]

FORMAT = "hessext-strips-v2"


def _tensor_bytes(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def fingerprint(prob: Problem, options: dict) -> str:
    """SHA-256 of everything that determines the assembled matrix (see the module docstring)."""
    h = hashlib.sha256()
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    h.update(f"{prob.names}|{prob.info['regularizer']}|{prob.loss.reduction}".encode())
    h.update(repr(prob.model).encode())
    h.update("|".join(f"{type(m).__module__}.{type(m).__qualname__}" for m in prob.model.modules()).encode())
    _tensor_bytes(h, prob.theta)
    for name in sorted(prob.others):
        h.update(name.encode())
        _tensor_bytes(h, prob.others[name])
    for x, y in prob.batches:
        _tensor_bytes(h, x)
        _tensor_bytes(h, y)
    fn = prob.loss.loss_fn
    h.update(f"{getattr(fn, '__qualname__', type(fn).__qualname__)}|{fn!r}".encode())
    # what the loss computes, not only its name: two losses of one class with other settings
    x0, y0 = (t[:4] for t in prob.batches[0])
    with torch.no_grad():
        out = prob.forward(prob.theta, x0)
    r, Lam = output_loss_derivatives(prob, out, y0)
    _tensor_bytes(h, prob.per_example_losses(out.detach(), y0).detach().to(torch.float64))
    _tensor_bytes(h, r)
    _tensor_bytes(h, Lam)
    return h.hexdigest()


def _strip_name(j0: int, j1: int) -> str:
    return f"strip_{j0:07d}_{j1:07d}.npy"


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class StripStore:
    """The ``out=`` directory of one assembly: opens (or creates) its manifest, hands back the
    verified strips already done, and stores new ones atomically (strip first, then the
    manifest entry with its checksum)."""

    def __init__(
        self,
        out,
        *,
        P: int,
        strip_width: int,
        kind: str,
        fingerprint: str,
        info: dict,
        who: str,
        writer: bool = True,
    ):
        self.dir, self.who, self.writer = Path(out), who, writer
        self.path = self.dir / "manifest.json"
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"{who}: out={self.dir} exists and is not a directory")
        if self.path.exists():
            try:
                man = json.loads(self.path.read_text())
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"{who}: out={self.dir} has an unreadable manifest.json ({err}); use another directory"
                ) from None
            if man.get("format") != FORMAT or man.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{who}: out={self.dir} holds strips of a different assembly "
                    "(other model, parameters, data, loss, dtype or options); use "
                    "another directory, or delete this one to start over"
                )
            self.manifest = man
        else:
            if self.dir.is_dir() and any(self.dir.iterdir()):
                raise ValueError(
                    f"{who}: out={self.dir} is not empty and holds no assembly "
                    "manifest; hessext writes only into an empty or its own directory"
                )
            self.manifest = {
                "format": FORMAT,
                "P": P,
                "strip_width": strip_width,
                "fingerprint": fingerprint,
                "kind": kind,
                "done": [],
                "sha256": {},
                "info": info,
            }
            if writer:
                self.dir.mkdir(parents=True, exist_ok=True)
                _write_json_atomic(self.path, self.manifest)

    def load_done(self, H: torch.Tensor) -> set:
        """Copy every verified finished strip into H[:j1, j0:j1]; return their (j0, j1)."""
        done = set()
        kept = []
        for j0, j1 in self.manifest["done"]:
            path = self.dir / _strip_name(j0, j1)
            try:
                S = np.load(path)
                ok = (
                    S.shape == (j1, j1 - j0)
                    and S.dtype == np.float64
                    and _sha256(S) == self.manifest["sha256"].get(f"{j0}_{j1}")
                )
            except (OSError, ValueError):
                ok = False
            if not ok:
                warnings.warn(
                    f"{self.who}: {path} is damaged (missing, truncated or overwritten: "
                    "its checksum does not match); recomputing it",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            H[:j1, j0:j1] = torch.from_numpy(S).to(H.device)
            done.add((j0, j1))
            kept.append([j0, j1])
        self.manifest["done"] = kept
        return done

    def save(self, j0: int, j1: int, strip: torch.Tensor) -> None:
        if not self.writer:
            return
        S = strip.cpu().numpy()
        path = self.dir / _strip_name(j0, j1)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, S)
        os.replace(tmp, path)
        self.manifest["done"].append([j0, j1])
        self.manifest["sha256"][f"{j0}_{j1}"] = _sha256(S)
        _write_json_atomic(self.path, self.manifest)


def load_strips(out) -> torch.Tensor:
    """Reassemble the float64 [P, P] matrix from a finished ``out=`` directory (each strip
    checked against its checksum)."""
    out = Path(out)
    man = json.loads((out / "manifest.json").read_text())
    if man.get("format") != FORMAT:
        raise ValueError(f"load_strips: {out} is not a {FORMAT} directory")
    P, W = man["P"], man["strip_width"]
    done = {tuple(s) for s in man["done"]}
    H = np.zeros((P, P))
    for j0 in range(0, P, W):
        j1 = min(P, j0 + W)
        if (j0, j1) not in done:
            raise ValueError(
                f"load_strips: strip [{j0}, {j1}) is missing in {out}: the assembly did not finish"
            )
        S = np.load(out / _strip_name(j0, j1))
        if _sha256(S) != man["sha256"].get(f"{j0}_{j1}"):
            raise ValueError(f"load_strips: {out / _strip_name(j0, j1)} does not match its checksum")
        H[:j1, j0:j1] = S
        H[j0:j1, :j0] = S[:j0].T
    return torch.from_numpy(H)
