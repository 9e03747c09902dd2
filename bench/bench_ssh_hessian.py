"""The demo's exact Hessian (hessext.models.SSHCNN, P = 1,024, float32 products summed in float64,
strips of 256 as hessext.demo._toolbox.exact_hessian runs it): the packed-tangent path vs the HVP
path, on the demo's training images (hessext.datasets.ssh, as hessext.demo.ssh selects them).

Run as a script:  python bench/bench_ssh_hessian.py [n_train ...]   (default: 40 200)
HESSEXT_BENCH_HVP=0 skips the HVP path. The model is SSHCNN(seed=0) untrained (the cost does not
depend on the weights). Prints a markdown table with `uptime` before and after. No assertions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def demo_training_images(n_train):
    import torch

    from hessext.datasets.ssh import make_ssh

    # hessext.demo.ssh: n_eval = 100 for 40 training images ('default'), 500 for 200 ('large');
    # the training split is ssh_splits(seed=0, n_eval).train, of which n_train evenly spaced ones
    n_eval = {12: 24, 40: 100, 200: 500}.get(n_train, max(n_train, 2))
    n_low = n_eval // 2
    v = torch.cat(
        [
            torch.linspace(0.0, 0.8, n_low, dtype=torch.float64),
            torch.linspace(1.2, 2.0, n_eval - n_low, dtype=torch.float64),
        ]
    )
    train = make_ssh(v, 0.0, seed=0)
    idx = torch.linspace(0, n_eval - 1, n_train).round().long()
    return train.x[idx], train.y[idx]


def main(sizes):
    import torch
    from torch import nn

    import hessext
    from hessext.models import SSHCNN

    print("uptime before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("| n_train | method | seconds | max abs diff to packed (rel.) |")
    print("|---|---|---|---|")
    methods = ["auto"] + (["hvp"] if os.environ.get("HESSEXT_BENCH_HVP", "1") != "0" else [])
    for n in sizes:
        x, y = demo_training_images(n)
        model = SSHCNN(seed=0).eval()
        ref = None
        for method in methods:
            t0 = time.perf_counter()
            H = hessext.hessian(
                model,
                nn.CrossEntropyLoss(reduction="none"),
                (x, y),
                dtype=torch.float32,
                progress=False,
                strip_width=256,
                method=method,
            )
            dt = time.perf_counter() - t0
            D = H.dense()
            diff = "" if ref is None else f"{float((D - ref).abs().max() / ref.abs().max()):.1e}"
            ref = D if ref is None else ref
            print(f"| {n} | {H.info['method']} | {dt:.2f} | {diff} |", flush=True)
    print("uptime after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [40, 200])
