"""The fast pure-PyTorch ContMix aggregation: clamped-window aggregation as batched matmuls over query tiles.

The queries of a feature map are split into tiles of ``Th x Tw`` pixels; the windows of a tile's queries all
lie in one key span of ``Sh x Sw`` pixels (``S <= T + K - 1``, never more than the map). Each query's ``K*K``
weights are placed in a dense ``(Th*Tw, Sh*Sw)`` matrix (zeros outside its window), so the aggregation of a
tile is one GEMM with the ``(C, Sh*Sw)`` values of its span. A map shorter than ``2K`` (or 24) along an axis
is one tile along it: the model's 14x14 maps at K = 13 are a single ``196 x 196`` matrix per group (1.16x the
taps), the 7x7 maps at K = 7 use the weights as they are. For one tile the dense matrix is filled by at most
nine strided copies (the window start is piecewise linear: clamped, sliding, clamped); several tiles use a
``scatter_``.

The dense matrices and the gathered spans are transient: autograd saves only the weights and the values
(never a ``K*K*C``-sized tensor) and backward rebuilds what it needs. Tensor layouts as in :mod:`.contmix`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["window_starts", "windowed_aggregate"]

MIN_TILED_LENGTH = 24  # axes shorter than this (or than 2K) are a single tile


def window_starts(length: int, kernel_size: int, device=None) -> torch.Tensor:
    """First row (or column) of each position's clamped window: ``clamp(i - K//2, 0, length - K)``.

    Returns an int64 tensor of shape ``(length,)``.
    """
    positions = torch.arange(length, device=device)
    return (positions - kernel_size // 2).clamp(0, length - kernel_size)


class _Axis(NamedTuple):
    """Tiling of one axis: ``count`` tiles of ``tile`` queries (``padded = count * tile`` slots, the last tile
    padded) reading ``span`` keys each; ``keys`` ``(count * span,)`` the gathered key positions (``None`` for
    one tile); ``local`` ``(count, tile)`` window starts inside the span; ``runs`` for one tile, the
    ``(first query, queries, first start, slope)`` pieces of the window start."""

    tile: int
    span: int
    padded: int
    keys: torch.Tensor | None
    local: torch.Tensor
    runs: list[tuple[int, int, int, int]]


def _runs(starts: list[int]) -> list[tuple[int, int, int, int]]:
    runs, i = [], 0
    while i < len(starts):
        slope = starts[i + 1] - starts[i] if i + 1 < len(starts) else 0
        j = i + 1
        while j < len(starts) and starts[j] - starts[j - 1] == slope:
            j += 1
        runs.append((i, j - i, starts[i], slope))
        i = j
    return runs


def _axis(length: int, k: int, device) -> _Axis:
    tile = length if length < max(2 * k, MIN_TILED_LENGTH) else -(-length // -(-length // k))
    count = -(-length // tile)
    span = min(tile + k - 1, length)
    queries = torch.arange(count * tile, device=device).clamp(max=length - 1).view(count, tile)
    starts = window_starts(length, k, device)[queries]
    key_start = starts[:, 0].clamp(max=length - span)
    keys = (key_start[:, None] + torch.arange(span, device=device)).reshape(-1) if count > 1 else None
    runs = []
    if count == 1:  # the runs are Python data: computed on the CPU, so that any device (also `meta`) works
        runs = _runs(window_starts(length, k, "cpu")[torch.arange(tile, device="cpu").clamp(max=length - 1)].tolist())
    return _Axis(tile, span, count * tile, keys, starts - key_start[:, None], runs)


class _Plan:
    """Both axes' tilings of an ``H x W`` map for kernel ``K``, and the tap -> dense-column index of each query."""

    def __init__(self, h: int, w: int, k: int, device):
        self.h, self.w, self.k = h, w, k
        self.rows, self.cols = _axis(h, k, device), _axis(w, k, device)
        self.tiles = (self.rows.padded // self.rows.tile) * (self.cols.padded // self.cols.tile)
        self.queries = self.rows.tile * self.cols.tile
        self.keys = self.rows.span * self.cols.span
        self.index = None
        if self.tiles > 1:
            taps = torch.arange(k, device=device)
            lh, lw, sw = self.rows.local, self.cols.local, self.cols.span
            index = (lh[:, None, :, None, None, None] + taps[:, None]) * sw + lw[None, :, None, :, None, None] + taps
            self.index = index.reshape(1, self.tiles, self.queries, k * k)

    def regions(self, dense: torch.Tensor):
        """One tile: ``(weights slice, dense view)`` pairs covering every query's window (at most nine)."""
        k, w, keys = self.k, self.w, self.keys
        batch_stride = self.queries * keys
        for i0, ni, si, di in self.rows.runs:
            for j0, nj, sj, dj in self.cols.runs:
                view = dense.as_strided(
                    (dense.shape[0], ni, nj, k, k), (batch_stride, w * keys + di * w, keys + dj, w, 1),
                    dense.storage_offset() + (i0 * w + j0) * keys + si * w + sj,
                )
                yield (slice(i0, i0 + ni), slice(j0, j0 + nj)), view

    def dense(self, weights: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, K*K)`` weights -> ``(N, P, T, S)`` per-tile dense matrices."""
        n, h, w, kk = weights.shape
        if self.tiles == 1 and h == w == self.k:  # the window is the whole map
            return weights.reshape(n, 1, self.queries, kk)
        dense = weights.new_zeros(n, self.tiles, self.queries, self.keys)
        if self.tiles == 1:
            for (rows, cols), view in self.regions(dense):
                view.copy_(weights[:, rows, cols].unflatten(-1, (self.k, self.k)))
            return dense
        return dense.scatter_(3, self.index.expand(n, -1, -1, -1), self.tile_queries(weights.permute(0, 3, 1, 2)))

    def taps(self, dense: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`dense`: ``(N, P, T, S)`` -> ``(N, H, W, K*K)``."""
        n, k = dense.shape[0], self.k
        if self.tiles == 1 and self.h == self.w == k:
            return dense.reshape(n, self.h, self.w, k * k)
        if self.tiles == 1:
            taps = dense.new_empty(n, self.h, self.w, k * k)
            for (rows, cols), view in self.regions(dense):
                taps[:, rows, cols].unflatten(-1, (k, k)).copy_(view)
            return taps
        taps = dense.gather(3, self.index.expand(n, -1, -1, -1))
        return self.untile(taps.transpose(-1, -2)).permute(0, 2, 3, 1)

    def spans(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, P, C, S)`` the key span of every tile."""
        sh, sw = self.rows.span, self.cols.span
        if self.rows.keys is not None:
            x = x.index_select(2, self.rows.keys)
        if self.cols.keys is not None:
            x = x.index_select(3, self.cols.keys)
        n, c, nh, nw = x.shape[0], x.shape[1], x.shape[2] // sh, x.shape[3] // sw
        return x.reshape(n, c, nh, sh, nw, sw).permute(0, 2, 4, 1, 3, 5).reshape(n, self.tiles, c, self.keys)

    def unspan(self, x: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`spans`: ``(N, P, C, S)`` -> ``(N, C, H, W)``, overlapping spans summed."""
        sh, sw, rows, cols = self.rows.span, self.cols.span, self.rows.keys, self.cols.keys
        n, c = x.shape[0], x.shape[2]
        nh, nw = self.rows.padded // self.rows.tile, self.cols.padded // self.cols.tile
        x = x.reshape(n, nh, nw, c, sh, sw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, nh * sh, nw * sw)
        if cols is not None:
            x = x.new_zeros(n, c, nh * sh, self.w).index_add_(3, cols, x)
        if rows is not None:
            x = x.new_zeros(n, c, self.h, self.w).index_add_(2, rows, x)
        return x

    def tile_queries(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, P, T, C)`` zero-padded query tiles."""
        th, tw, ph, pw = self.rows.tile, self.cols.tile, self.rows.padded, self.cols.padded
        n, c, h, w = x.shape
        x = F.pad(x, (0, pw - w, 0, ph - h)).reshape(n, c, ph // th, th, pw // tw, tw)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(n, self.tiles, self.queries, c)

    def untile(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, P, C, T)`` -> ``(N, C, H, W)`` (padding slots dropped)."""
        th, tw, ph, pw = self.rows.tile, self.cols.tile, self.rows.padded, self.cols.padded
        n, _, c, _ = x.shape
        x = x.reshape(n, ph // th, pw // tw, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, ph, pw)
        return x[:, :, : self.h, : self.w]


class _WindowedAggregate(torch.autograd.Function):
    """``out = sum_taps weights * value[window]`` with a hand-written backward that saves only the inputs."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
        b, g, c, h, w = value.shape
        plan = _Plan(h, w, kernel_size, value.device)
        dense = plan.dense(weights.reshape(b * g, h, w, -1))
        out = plan.untile(torch.matmul(plan.spans(value.reshape(b * g, c, h, w)), dense.transpose(-1, -2)))
        ctx.save_for_backward(weights, value)
        ctx.kernel_size = kernel_size
        return out.reshape(b, g, c, h, w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        weights, value = ctx.saved_tensors
        b, g, c, h, w = value.shape
        plan = _Plan(h, w, ctx.kernel_size, value.device)
        grad_tiles = plan.tile_queries(grad_out.reshape(b * g, c, h, w))  # (N, P, T, C)
        grad_weights = grad_value = None
        if ctx.needs_input_grad[0]:
            grad_dense = torch.matmul(grad_tiles, plan.spans(value.reshape(b * g, c, h, w)))  # (N, P, T, S)
            grad_weights = plan.taps(grad_dense).reshape(weights.shape)
        if ctx.needs_input_grad[1]:
            dense = plan.dense(weights.reshape(b * g, h, w, -1))
            grad_spans = torch.matmul(grad_tiles.transpose(-1, -2), dense)  # (N, P, C, S)
            grad_value = plan.unspan(grad_spans).reshape(value.shape)
        return grad_weights, grad_value, None


def windowed_aggregate(weights: torch.Tensor, value: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Same result as :func:`overlock_hf.contmix.neighborhood_aggregate`, as tiled batched matmuls.

    Args:
        weights: ``(B, G, H, W, K*K)`` aggregation weights.
        value: ``(B, G, C, H, W)`` values.
    Returns:
        ``(B, G, C, H, W)``; differentiable in ``weights`` and ``value``, saving only the two inputs.
    """
    return _WindowedAggregate.apply(weights, value, kernel_size)
