"""What this installation of hessext actually provides (``hessext.info()``; on the command line
``hessext info`` or ``python -m hessext info``)."""

from __future__ import annotations

import json
import sys

import torch

from hessext import _extension
from hessext._version import __version__
from hessext.per_sample import fast_forward, kernel_layers


def info() -> dict:
    """Build and runtime information: the version, the torch the core was built against, which
    ops have CPU and CUDA kernels, CUDA architectures, and the CPU thread count."""
    C = _extension._C
    ops = _extension.registered_ops()
    return {
        "hessext": __version__,
        "torch": torch.__version__,
        "compiled_core": _extension.status,
        "built_against_torch": C.torch_version if C else None,
        "openmp": bool(C.with_openmp) if C else False,
        "threads": C.num_threads() if C else torch.get_num_threads(),
        "cuda_kernels_built": bool(C.with_cuda) if C else False,
        "cuda_archs": (C.cuda_archs.split(",") if C and C.cuda_archs else []),
        "cuda_available": torch.cuda.is_available(),
        "cpu_kernels": [op for op in ops if _extension.has_kernel(op, "cpu")],
        "cuda_kernel_ops": [op for op in ops if _extension.has_kernel(op, "cuda")],
        "per_sample_kernel_layers": kernel_layers(),
        "per_sample_forward_ops": _per_sample_forward_ops(),
    }


def _per_sample_forward_ops() -> list[str]:
    """Layers the per-sample capture's forward pass runs on hessext's ops (when compiled)."""
    if not _extension.has_kernel("max_pool_forward", "cpu"):
        return []
    return [
        "MaxPool1d/2d (window = stride; a ReLU before it applied after it)",
        f"Conv1d/2d (<= {fast_forward.SMALL_CONV_TERMS} terms per output, "
        f"rows >= {fast_forward.LONG_CONV_ROWS})",
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    unknown = [a for a in argv if a not in ("--json", "--require-cuda-kernels")]
    if unknown:
        print(f"usage: hessext info [--json] [--require-cuda-kernels]; unknown {unknown}", file=sys.stderr)
        return 2
    data = info()
    if "--json" in argv:
        print(json.dumps(data, indent=2))
        return 0
    width = max(map(len, data))
    for key, value in data.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        print(f"{key:<{width}}  {value}")
    if "--require-cuda-kernels" in argv:
        # CI's check of the CUDA variant: every registered op must have a CUDA kernel
        all_ops = _extension.registered_ops()
        missing = sorted(set(all_ops) - set(data["cuda_kernel_ops"]))
        if not data["cuda_kernels_built"] or not all_ops or missing:
            print(f"hessext: CUDA kernels missing for {missing or 'all ops'}", file=sys.stderr)
            return 1
        print(f"hessext: all {len(all_ops)} ops have CUDA kernels")
    return 0
