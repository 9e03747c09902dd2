"""Strip fillers of the dense assembly: each writes H[0:j1, j0:j1] (summed over its
mini-batches, divided by n) for the driver in hessext/curvature/assembly.py.

- ``mlp_blocks``: closed-form layer-pair blocks of an MLP (Hessian and GGN);
- ``piecewise_cnn``: GGN factor products + the packed-tangent residual of a piecewise-linear CNN;
- ``ggn``: per-example GGN factors from torch.func Jacobians (any model);
- ``hvp``: batched Hessian-vector products (any model; the reference path).
"""
