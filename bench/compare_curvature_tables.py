"""The error tables of docs/structured-curvature.md: ``hessext.compare_curvature`` on the
decision-boundary MLP (mlp(2, 100, 100, 3), P = 10,703, trained here on three Gaussian blobs)
and the toolbox's 1-D CNN (P = 740, the published checkpoint and data from shared/reference).

Run: python bench/compare_curvature_tables.py   (HESSEXT_TABLES=mlp,toolbox picks the tables;
the toolbox table needs the shared reference data and is skipped without it)
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

import hessext
from hessext import datasets, models, testing
from hessext.regularizers import L2

APPROXIMATIONS = ["kfac", "ekfac", "kfac-ggn", "ekfac-ggn", "diag_ggn"]


def ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def boundary_mlp():
    x, y = datasets.toy2d.three_gaussians(n=450, seed=0)
    model = models.boundary.mlp(2, 100, 100, 3, seed=0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    train, test = (x[:300], y[:300]), (x[300:310], y[300:310])
    for _ in range(300):
        opt.zero_grad()
        (
            ce(model(train[0]), train[1]).mean() + 0.5e-3 * sum(p.square().sum() for p in model.parameters())
        ).backward()
        opt.step()
    return model, train, test, L2(1e-3)


def toolbox_cnn():
    model = testing.toolbox_model()
    train, test = testing.toolbox_data("validation"), testing.toolbox_data("test")
    return (
        model,
        train,
        (test[0][:10], test[1][:10]),
        L2.from_weight_decay(testing.TOOLBOX_LAMBDA, testing.TOOLBOX_N_TRAIN),
    )


def main():
    torch.set_num_threads(int(os.environ.get("HESSEXT_BENCH_THREADS", "1")))
    for name in os.environ.get("HESSEXT_TABLES", "toolbox,mlp").split(","):
        try:
            model, train, test, reg = {"mlp": boundary_mlp, "toolbox": toolbox_cnn}[name]()
        except BaseException as err:  # the toolbox data absent: testing skips (pytest's Skipped)
            print(f"## {name}: skipped ({err})")
            continue
        t = time.perf_counter()
        result = hessext.compare_curvature(
            model, ce, train, APPROXIMATIONS, test=test, damping=0.01, regularizer=reg, progress=False
        )
        P = sum(p.numel() for p in model.parameters())
        print(
            f"## {name} (P = {P:,}, n = {train[0].shape[0]}, damping 0.01, {time.perf_counter() - t:.0f} s)\n"
        )
        print(result.table())
        print()


if __name__ == "__main__":
    main()
