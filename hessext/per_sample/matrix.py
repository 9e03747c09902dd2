"""The per-sample gradient matrix G [N, P] (row i = ∇θ ℓ(z_i) + ∇R(θ)): materialised by
``per_sample_grads``, or as the lazy operator ``PerSampleGrads`` whose products never form G
(ghost contractions for Linear layers without a sequence axis, row chunks otherwise).
How the rows are computed: hessext/per_sample/capture.py."""

from __future__ import annotations

import math

import torch
from torch import nn

from hessext import ops
from hessext._internal.guard import grad_mode
from hessext._internal.memory import empty_large
from hessext._internal.params import unflatten_params
from hessext._internal.progress import progress_bar
from hessext.per_sample.capture import capture, write_fallback, write_layer

__all__ = ["per_sample_grads", "PerSampleGrads"]

# The lazy operator materialises row chunks of at most this many elements by default.
_DEFAULT_CHUNK_ELEMS = 1 << 25


@grad_mode
def per_sample_grads(
    model: nn.Module,
    loss_fn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    params=None,
    regularizer=None,
    out: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    check_finite: bool = True,
) -> torch.Tensor:
    """Per-sample gradients G: [N, P], row i = ∇θ ℓ(z_i) (+ ∇R(θ) with a regularizer).

    model: any nn.Module (run in eval mode, left untouched); loss_fn(outputs, targets) → [N]
    per-example losses; inputs: [N, ...] (float32/float64, or integer indices for models with
    nn.Embedding); targets: [N, ...]; params: None (all parameters requiring grad), or names or
    tensors of the model's parameters; columns follow named_parameters() order over them.
    regularizer: e.g. ``L2.from_weight_decay(λ, n)``, adds ∇R(θ) to every row.
    out: optional preallocated [N, P] tensor of the working dtype with contiguous rows.
    dtype: working and output dtype (default: the parameters'); float64 on a float32 model
    computes everything in float64. chunk_size: samples per torch.func call for layers without
    a kernel (None: all at once). check_finite: refuse (ValueError naming the examples) a loss
    or gradient that is not finite; False returns such rows as they are.

    Which parameters the kernels serve and why the others are not is what ``PerSampleGrads``
    reports (``kernel_param_names``, ``fallback_reasons``)."""
    fn = "per_sample_grads"
    cap = capture(fn, model, loss_fn, inputs, targets, params, regularizer, dtype, check_finite=check_finite)
    P = sum(math.prod(s) for s in cap.shapes)
    if out is None:
        out = empty_large(cap.n, P, cap.dtype, cap.device)
    elif (
        not isinstance(out, torch.Tensor)
        or out.shape != (cap.n, P)
        or out.dtype != cap.dtype
        or out.device != cap.device
        or (P > 1 and out.stride(1) != 1)
    ):
        got = (tuple(out.shape), out.dtype, out.device) if isinstance(out, torch.Tensor) else type(out)
        raise ValueError(
            f"{fn}: out must be a [{cap.n}, {P}] {cap.dtype} tensor on {cap.device} "
            f"with contiguous rows, got {got}"
        )
    rows = slice(0, cap.n)
    for layer in cap.layers:
        write_layer(layer, rows, out, cap.offsets)
    write_fallback(cap, model, loss_fn, cap.fallback, rows, out, cap.offsets, chunk_size)
    if cap.reg_grad is not None:
        out += cap.reg_grad
    return out


class PerSampleGrads:
    """The per-sample gradient matrix G [N, P] as a lazy linear operator; never forms all of G.

    Supports ``G @ V`` (V: [P, M] or [P] → [N, M] or [N]), ``G.T @ U`` (``.T`` is a view
    object; equivalently ``G.rmatmul(U)``; U: [N, M] or [N] → [P, M] or [P]),
    ``G.row_norms()`` → [N], ``G.column_sq_sums()`` → [P], ``G.gram()`` → [N, N],
    ``G.materialize()`` → [N, P], ``G.shape``,
    ``G.param_names``, ``G.param_shapes``, ``G.unflatten(row)``, and which parameters the native
    kernels serve (``G.kernel_param_names``) or torch.func (``G.fallback_param_names``, with
    ``G.fallback_reasons``: {name: why not a kernel, e.g. a subclass, a hook, a shared weight}
    and ``G.fallback_method``: vmapped over the examples, or one example at a time where
    torch.func cannot vmap the model, e.g. nn.LSTM; known once those columns were computed).

    Linear layers without a sequence axis use the ghost contractions of docs/methods.md §1 (memory
    O(N·width), independent of P). Everything else (convolutions, Linear over sequences,
    layers without a kernel) is materialised ``chunk_size`` rows at a time, so the memory is
    bounded by chunk_size × (their parameter count). The regulariser term g_i + r enters
    exactly as rank-one corrections. One forward and backward pass happen at construction;
    the object reflects the parameters at that moment (do not modify the model in place while
    using it). Arguments as in ``per_sample_grads``; with check_finite (default) a non-finite
    loss or gradient raises a ValueError naming the examples, at construction or when the
    torch.func columns are first computed.
    """

    @grad_mode
    def __init__(
        self,
        model: nn.Module,
        loss_fn,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        params=None,
        regularizer=None,
        chunk_size: int | None = None,
        dtype: torch.dtype | None = None,
        ghost: bool = True,
        progress: bool | None = None,
        check_finite: bool = True,
    ):
        fn = "PerSampleGrads"
        self._cap = capture(
            fn, model, loss_fn, inputs, targets, params, regularizer, dtype, check_finite=check_finite
        )
        self._model, self._loss_fn, self._progress = model, loss_fn, progress
        cap = self._cap
        self.param_names = list(cap.names)
        # which parameters the native kernels serve and which go through torch.func
        self.kernel_param_names = [k for k in cap.names if k not in set(cap.fallback)]
        self.fallback_param_names = list(cap.fallback)
        self.fallback_reasons = dict(cap.reasons)
        self.param_shapes = [torch.Size(s) for s in cap.shapes]
        numel = {k: math.prod(s) for k, s in zip(cap.names, cap.shapes)}
        P = sum(numel.values())
        self.shape = torch.Size((cap.n, P))
        self.dtype, self.device = cap.dtype, cap.device
        self._ghost = [layer for layer in cap.layers if ghost and layer.ghost]
        self._row_layers = [layer for layer in cap.layers if not (ghost and layer.ghost)]
        # Columns materialised by row chunks, in global order, with offsets local to the chunk.
        row_names = [k for layer in self._row_layers for k in (layer.weight, layer.bias) if k]
        row_names = [k for k in cap.names if k in set(row_names) | set(cap.fallback)]
        self._row_offsets, local = {}, 0
        for k in row_names:
            self._row_offsets[k] = local
            local += numel[k]
        self._row_width = local
        self._row_cols = (
            torch.cat(
                [
                    torch.arange(cap.offsets[k], cap.offsets[k] + numel[k], device=cap.device)
                    for k in row_names
                ]
            )
            if row_names
            else None
        )
        if chunk_size is None:
            chunk_size = max(1, _DEFAULT_CHUNK_ELEMS // max(1, self._row_width))
        if int(chunk_size) < 1:
            raise ValueError(f"{fn}: chunk_size must be a positive integer, got {chunk_size}")
        self.chunk_size = int(chunk_size)

    @property
    def fallback_method(self) -> str | None:
        """How torch.func computes the fallback columns: vmapped over the examples, or one
        example at a time (and why); None when there are none."""
        return self._cap.batched.how if self.fallback_param_names else None

    # -- helpers -------------------------------------------------------------------------------

    def __repr__(self):
        return (
            f"PerSampleGrads(shape={tuple(self.shape)}, dtype={self.dtype}, ghost layers="
            f"{len(self._ghost)}, row-chunked columns={self._row_width})"
        )

    def unflatten(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split [P] or [..., P] into {name: [..., *shape]} (views)."""
        return unflatten_params(row, self.param_names, self.param_shapes)

    @property
    def T(self) -> _Transposed:
        """Gᵀ as a lazy view: ``G.T @ U`` is ``G.rmatmul(U)``."""
        return _Transposed(self)

    def _chunks(self, desc):
        n, c = self.shape[0], self.chunk_size
        starts = range(0, n, c)
        return progress_bar(
            (slice(s, min(s + c, n)) for s in starts), total=len(starts), desc=desc, progress=self._progress
        )

    def _row_block(self, rows: slice) -> torch.Tensor:
        """G[rows] restricted to the row-chunked columns, regulariser excluded."""
        cap = self._cap
        out = empty_large(rows.stop - rows.start, self._row_width, self.dtype, self.device)
        for layer in self._row_layers:
            write_layer(layer, rows, out, self._row_offsets)
        write_fallback(cap, self._model, self._loss_fn, cap.fallback, rows, out, self._row_offsets)
        return out

    def _ghost_parts(self, layer):
        """(a [N, I], d [N, O]) of a ghost layer."""
        return layer.a[:, 0, :], layer.d[:, 0, :]

    def _as_matrix(self, x, rows_expected, what):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"PerSampleGrads.{what}: expected a torch.Tensor, got {type(x).__name__}")
        vec = x.dim() == 1
        m = x.unsqueeze(1) if vec else x
        if m.dim() != 2 or m.shape[0] != rows_expected:
            raise ValueError(
                f"PerSampleGrads.{what}: expected shape [{rows_expected}, M] or "
                f"[{rows_expected}], got {tuple(x.shape)}"
            )
        if not m.is_floating_point():
            raise TypeError(f"PerSampleGrads.{what}: expected a floating tensor, got {m.dtype}")
        return m.to(device=self.device, dtype=self.dtype), vec

    # -- raw products (no regulariser) ---------------------------------------------------------

    def _matmul_raw(self, V: torch.Tensor) -> torch.Tensor:
        off = self._cap.offsets
        out = torch.zeros(self.shape[0], V.shape[1], dtype=self.dtype, device=self.device)
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            O, I = d.shape[1], a.shape[1]
            if layer.weight:
                out += ops.linear_ghost_matvec(a, d, V[off[layer.weight] : off[layer.weight] + O * I])
            if layer.bias:
                out += d @ V[off[layer.bias] : off[layer.bias] + O]
        if self._row_width:
            Vr = V[self._row_cols]
            for rows in self._chunks("G @ V"):
                out[rows] += self._row_block(rows) @ Vr
        return out

    def _rmatmul_raw(self, U: torch.Tensor) -> torch.Tensor:
        off = self._cap.offsets
        out = torch.zeros(self.shape[1], U.shape[1], dtype=self.dtype, device=self.device)
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            O, I = d.shape[1], a.shape[1]
            if layer.weight:
                out[off[layer.weight] : off[layer.weight] + O * I] = ops.linear_ghost_rmatvec(a, d, U)
            if layer.bias:
                out[off[layer.bias] : off[layer.bias] + O] = d.T @ U
        if self._row_width:
            acc = torch.zeros(self._row_width, U.shape[1], dtype=self.dtype, device=self.device)
            for rows in self._chunks("G.T @ U"):
                acc += self._row_block(rows).T @ U[rows]
            out[self._row_cols] = acc
        return out

    def _sqnorms_raw(self) -> torch.Tensor:
        out = torch.zeros(self.shape[0], dtype=self.dtype, device=self.device)
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            if layer.weight:
                out += ops.linear_ghost_sqnorms(a, d)
            if layer.bias:
                out += d.square().sum(1)
        if self._row_width:
            for rows in self._chunks("row norms"):
                out[rows] += self._row_block(rows).square().sum(1)
        return out

    def _column_sq_sums_raw(self) -> torch.Tensor:
        out = torch.zeros(self.shape[1], dtype=torch.float64, device=self.device)
        off = self._cap.offsets
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            O, I = d.shape[1], a.shape[1]
            if layer.weight:  # Σ_n (d_n a_nᵀ)² = (d²)ᵀ (a²): the rank-one rows, never formed
                sq = d.double().square().T @ a.double().square()
                out[off[layer.weight] : off[layer.weight] + O * I] = sq.reshape(-1)
            if layer.bias:
                out[off[layer.bias] : off[layer.bias] + O] = d.double().square().sum(0)
        if self._row_width:
            acc = torch.zeros(self._row_width, dtype=torch.float64, device=self.device)
            for rows in self._chunks("column norms"):
                acc += self._row_block(rows).double().square().sum(0)
            out[self._row_cols] = acc
        return out

    def _gram_raw(self) -> torch.Tensor:
        n = self.shape[0]
        out = torch.zeros(n, n, dtype=self.dtype, device=self.device)
        for layer in self._ghost:
            a, d = self._ghost_parts(layer)
            if layer.weight:
                out += ops.linear_ghost_gram(a, d)
            if layer.bias:
                out += d @ d.T
        if self._row_width:
            chunks = list(self._chunks("Gram"))
            if len(chunks) == 1:
                block = self._row_block(chunks[0])
                out += block @ block.T
            else:
                # Blocks (i, j >= i): each row chunk is recomputed per pair rather than stored,
                # keeping memory at two chunks.
                for i, ri in enumerate(chunks):
                    bi = self._row_block(ri)
                    out[ri, ri] += bi @ bi.T
                    for rj in chunks[i + 1 :]:
                        c = bi @ self._row_block(rj).T
                        out[ri, rj] += c
                        out[rj, ri] += c.T
        return out

    # -- public products -----------------------------------------------------------------------

    @grad_mode
    def __matmul__(self, V: torch.Tensor) -> torch.Tensor:
        """G @ V: V [P, M] or [P] → [N, M] or [N]."""
        V, vec = self._as_matrix(V, self.shape[1], "__matmul__")
        out = self._matmul_raw(V)
        r = self._cap.reg_grad
        if r is not None:  # (G + 1 rᵀ) V = G V + 1 (rᵀ V)
            out += (r @ V).unsqueeze(0)
        return out.squeeze(1) if vec else out

    def matmul(self, V: torch.Tensor) -> torch.Tensor:
        """Same as ``G @ V``."""
        return self @ V

    @grad_mode
    def rmatmul(self, U: torch.Tensor) -> torch.Tensor:
        """Gᵀ U: U [N, M] or [N] → [P, M] or [P]."""
        U, vec = self._as_matrix(U, self.shape[0], "rmatmul")
        out = self._rmatmul_raw(U)
        r = self._cap.reg_grad
        if r is not None:  # (G + 1 rᵀ)ᵀ U = Gᵀ U + r (1ᵀ U)
            out += r.unsqueeze(1) * U.sum(0, keepdim=True)
        return out.squeeze(1) if vec else out

    t_matmul = rmatmul

    @grad_mode
    def row_norms(self) -> torch.Tensor:
        """‖g_i‖₂ for every example: [N]."""
        sq = self._sqnorms_raw()
        r = self._cap.reg_grad
        if r is not None:  # ‖g + r‖² = ‖g‖² + 2 gᵀr + ‖r‖²
            sq = sq + 2 * self._matmul_raw(r.unsqueeze(1)).squeeze(1) + r @ r
        return sq.clamp_min(0).sqrt()

    @grad_mode
    def gram(self) -> torch.Tensor:
        """G Gᵀ: [N, N]."""
        out = self._gram_raw()
        r = self._cap.reg_grad
        if r is not None:  # (G + 1rᵀ)(G + 1rᵀ)ᵀ = GGᵀ + (Gr)1ᵀ + 1(Gr)ᵀ + ‖r‖²
            gr = self._matmul_raw(r.unsqueeze(1)).squeeze(1)
            out += gr.unsqueeze(1) + gr.unsqueeze(0) + r @ r
        return out

    def column_sq_sums(self) -> torch.Tensor:
        """Σ_i G_ij² for every parameter j: [P] float64 (ghost products for Linear layers)."""
        out = self._column_sq_sums_raw()
        r = self._cap.reg_grad
        if r is not None:  # Σ_i (g_ij + r_j)² = Σ g² + 2 r_j Σ_i g_ij + n r_j²
            col = self._rmatmul_raw(torch.ones(self.shape[0], 1, dtype=self.dtype, device=self.device))
            out += 2 * r.double() * col[:, 0].double() + self.shape[0] * r.double().square()
        return out

    @grad_mode
    def materialize(self) -> torch.Tensor:
        """The whole matrix G: [N, P] (what ``per_sample_grads`` returns)."""
        cap = self._cap
        out = empty_large(self.shape[0], self.shape[1], self.dtype, self.device)
        rows = slice(0, cap.n)
        for layer in cap.layers:
            write_layer(layer, rows, out, cap.offsets)
        write_fallback(cap, self._model, self._loss_fn, cap.fallback, rows, out, cap.offsets, self.chunk_size)
        if cap.reg_grad is not None:
            out += cap.reg_grad
        return out


class _Transposed:
    """Gᵀ for ``G.T @ U``."""

    def __init__(self, g: PerSampleGrads):
        self._g = g
        self.shape = torch.Size((g.shape[1], g.shape[0]))

    def __matmul__(self, U: torch.Tensor) -> torch.Tensor:
        return self._g.rmatmul(U)

    @property
    def T(self) -> PerSampleGrads:
        return self._g
