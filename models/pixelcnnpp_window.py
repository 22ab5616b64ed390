"""Windowed cached Jacobi for PixelCNN++: Jacobi that recomputes only the layer positions that can still change
(Jacobi sampling after Song et al., ICML 2021, arXiv 2002.03629; the layout is ``models.pixelcnnpp_graph``'s).

State, per batch: the iterate x (every pixel), each row's final prefix (pixels known to be the sequential sample)
and every node's buffer. A position of a node whose ``ready`` <= ``done`` was computed from final pixels only: it
is never computed again. One iteration with shared final prefix F and window W:
- recomputes, node by node, the rows holding positions with ready in (done, F + W - 1] (whole rows: one
  convolution per node, fewer calls being what counts on a CPU; positions recomputed beyond the range are
  recomputed again once their inputs are final, positions below it are recomputed from final inputs);
- samples pixels [F, F + W) from the output (a Jacobi update; a row's pixels below its own final prefix are kept);
- per row, the pixels up to the first disagreement between old and new iterate were computed from final pixels,
  so that row's final prefix moves past it (at least one pixel per iteration, as in Jacobi); ``done`` becomes the
  smallest final prefix minus one.

Exactness: sums run in other shapes than the reference (banded) map, so the result is a candidate certified by one
evaluation of the reference map (``samplers.certify``). Shapes: noise (B, nr_mix + C, H, W); x (B, H*W, C) long.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
import torch

from models.dmol import dmol_sample_terms, from_levels, noise_terms
from models.pixelcnnpp_graph import Rect, at
from models.pixelcnnpp_incremental import Buffers, IncrementalPixelCNNpp

DEFAULT_WINDOW = 112  # four image rows (re-measured by benchmarks/sampling.py; auto picks per batch size)


class WindowedPixelJacobi:
    def __init__(self, sampler: IncrementalPixelCNNpp, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1; got {window}")
        self.sampler, self.window = sampler, window
        self.graph = sampler.graph
        self.row_min = [node.ready.min(axis=1) for node in self.graph.nodes]
        self.row_max = [node.ready.max(axis=1) for node in self.graph.nodes]
        self.computed = 0  # multiply-adds per row of the last solve

    def rows(self, index: int, lo: int, hi: int) -> Rect | None:
        """Whole rows of node ``index`` that hold its positions with lo < ready <= hi (or a few more)."""
        rows = np.flatnonzero((self.row_max[index] > lo) & (self.row_min[index] <= hi))
        if rows.size == 0:
            return None
        width = self.row_min[index].size
        return int(rows[0]), int(rows[-1]) + 1, 0, width

    def solve(self, noise: torch.Tensor) -> Generator[None, None, tuple[torch.Tensor, list[int]]]:
        """Sample ``noise``; yields after each iteration. Returns x (B, H*W, C) and each row's iterations."""
        graph, size, mix, channels = self.graph, self.sampler.size, self.sampler.nr_mix, self.sampler.channels
        batch, pixels = noise.shape[0], size * size
        buffers = Buffers(graph, batch, noise.device)
        gumbel, logistic = noise_terms(noise[:, :mix], noise[:, mix:])
        x = torch.zeros(batch, channels, size, size, dtype=torch.long, device=noise.device)
        flat = x.view(batch, channels, pixels)
        at(buffers.tensors[0], (0, size, 0, size))[:, :channels] = from_levels(x)  # the buffer holds the iterate
        final = torch.zeros(batch, dtype=torch.long, device=noise.device)
        iterations = torch.zeros(batch, dtype=torch.long, device=noise.device)
        done, start, macs = -1, 0, 0
        with torch.no_grad():
            while start < pixels:
                end = min(start + self.window, pixels)
                for index in range(1, len(graph.nodes)):
                    rect = self.rows(index, done, end - 1)
                    if rect is not None:
                        buffers.run(index, [rect])
                        macs += graph.nodes[index].macs * (rect[1] - rect[0]) * rect[3]
                r0, r1 = start // size, (end - 1) // size + 1
                rect = (r0, r1, 0, size)
                params = at(buffers.tensors[-1], rect)
                g, lg = gumbel[:, :, r0:r1], logistic[:, :, r0:r1]
                levels = dmol_sample_terms(params, g, lg, mix).flatten(2)[:, :, start - r0 * size : end - r0 * size]
                old = flat[:, :, start:end]
                keep = torch.arange(start, end, device=noise.device)[None] < final[:, None]  # (B, n)
                new = torch.where(keep[:, None], old, levels)
                agree = (new == old).all(dim=1)  # (B, n)
                first = torch.where(agree.all(dim=1), agree.shape[1], (~agree).int().argmax(dim=1))
                iterations += final < pixels
                final = torch.maximum(final, torch.clamp(start + first + 1, max=end))
                flat[:, :, start:end] = new
                at(buffers.tensors[0], rect)[:, :channels] = from_levels(x[:, :, r0:r1])
                start = int(final.min())
                done = start - 1
                yield
        self.computed = macs
        return flat.transpose(1, 2).contiguous(), iterations.tolist()
