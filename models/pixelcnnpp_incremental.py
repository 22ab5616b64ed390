"""The work-optimal sequential PixelCNN++ sampler: each layer's position computed once, when its inputs exist.

Fast PixelCNN++ in spirit (Ramachandran et al., "Fast Generation for Convolutional Autoregressive Models", arXiv
1704.06001): per-layer caches, and per generated pixel only the positions that pixel makes computable. The
``ready`` maps of ``models.pixelcnnpp_graph`` say which those are (for a full-resolution node: about one position;
for the half- and quarter-resolution nodes: one position every second or fourth pixel of every second or fourth
row), so the whole image costs one forward pass of arithmetic, in H*W small steps, against a band of rows per
pixel for the band-cached sampler (``models.pixelcnnpp_bands``) and a whole image per pixel for the textbook one.

What makes the small steps cheap: one position is a GEMV (``pixelcnnpp_graph.Conv``), and every slice a step
reads and writes is cut once per batch size (``Steps``, pooled) rather than at every step.

Exactness: its sums run in other shapes than the reference (banded) map's, so its sample is a *candidate*; the
sampling family certifies it with one evaluation of the reference map and repairs what fails
(``samplers.certify``).

Shapes: noise (B, nr_mix + C, H, W) uniforms; samples (B, H*W, C) long levels 0..255.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from models.dmol import dmol_sample_terms, from_levels, noise_terms
from models.pixelcnnpp import PixelCNNpp
from models.pixelcnnpp_graph import Compute, PixelGraph, Read, Rect, at

POOLED_SIZES = 4  # batch sizes whose buffers and cut slices are kept between samplings
POOLED_MAX_BATCH = 16  # larger batches get fresh buffers (about 4 MB a row on the shipped model): cutting the
# slices anew costs ~0.3 s, a few percent of a batch of 100, and nothing stays held after the request


class Buffers:
    """Every node's activations for a batch (zero margins = the convolutions' padding and the shifts' zeros).
    Stored channels-last: a window of a few positions is then a few contiguous runs, not C strided planes (the
    one-position steps at batch 100 are about 10x faster so)."""

    def __init__(self, graph: PixelGraph, batch: int, device: torch.device) -> None:
        self.graph = graph
        shapes = [(batch, node.channels, (graph.size >> node.level) + 1, (graph.size >> node.level) + 2)
                  for node in graph.nodes]  # fmt: skip
        self.tensors = [torch.zeros(shape, device=device).contiguous(memory_format=torch.channels_last)
                        for shape in shapes]  # fmt: skip
        self.tensors[0][:, graph.channels, 1:, 1:-1] = 1.0  # the constant channel that marks the image

    def zero(self) -> None:
        for tensor in self.tensors[1:]:
            tensor.zero_()  # margins must stay zero; interiors are rewritten before they are read

    def task(self, index: int, rect: Rect) -> Task:
        """What computing node ``index`` on ``rect`` reads and writes, cut from the buffers."""
        node = self.graph.nodes[index]
        views = [read.slicer(self.tensors[read.source], rect) for read in node.reads]
        return Task(node.compute, views, rect, at(self.tensors[index], rect))

    def run(self, index: int, rects: list[Rect]) -> None:
        for rect in rects:
            self.task(index, rect)()


@dataclass(frozen=True)
class Task:
    compute: Compute
    views: list[torch.Tensor]
    rect: Rect
    target: torch.Tensor

    def __call__(self) -> None:
        self.target.copy_(self.compute(self.views, self.rect))


class Steps:
    """The sequential sampler's H*W steps for one batch size: buffers, and every step's tasks cut in advance."""

    def __init__(self, sampler: IncrementalPixelCNNpp, batch: int) -> None:
        self.buffers = Buffers(sampler.graph, batch, sampler.device)
        size = sampler.size
        self.tasks = [[self.buffers.task(i, r) for i, rects in work for r in rects] for work in sampler.schedule()]
        self.params = [at(self.buffers.tensors[-1], (n // size, n // size + 1, n % size, n % size + 1))
                       for n in range(size * size)]  # fmt: skip
        self.pixels = [at(self.buffers.tensors[0], (n // size, n // size + 1, n % size, n % size + 1))
                       [:, : sampler.channels] for n in range(size * size)]  # fmt: skip


class IncrementalPixelCNNpp:
    """Sequential sampling with every layer evaluated once per position. Built once per model (weights frozen)."""

    def __init__(self, model: PixelCNNpp) -> None:
        self.graph = PixelGraph(model)
        self.size, self.channels, self.nr_mix = model.config.image_size, model.config.channels, model.config.nr_mix
        self.device = next(model.parameters()).device
        self._schedule: list[list[tuple[int, list[Rect]]]] | None = None
        self._pool: dict[int, list[Steps]] = {}

    def schedule(self) -> list[list[tuple[int, list[Rect]]]]:
        """Per step n, (node, rects) in evaluation order: the positions whose step (``steps``) is n."""
        if self._schedule is None:
            graph, steps = self.graph, self.steps_of_positions()
            schedule = []
            for n in range(self.size**2):
                work = [(i, graph.rects(i, n - 1 if n else -1, n, steps[i])) for i in range(1, len(graph.nodes))]
                schedule.append([(i, rects) for i, rects in work if rects])
            self._schedule = schedule
        return self._schedule

    def steps_of_positions(self) -> list[np.ndarray]:
        """Per node, the step at which each of its positions is computed: as late as it is needed. The head's
        position (i, j) at the step that samples pixel (i, j); any other position at the earliest step of a
        position that reads it. A row whose positions are all ready by its earliest such step is computed in one
        rect at that step: the up stream's rows need only rows above, so a row of a node costs one convolution
        instead of W one-position steps. Every position is still computed once, after everything it reads."""
        nodes, size = self.graph.nodes, self.size
        readers: list[list[tuple[int, Read]]] = [[] for _ in nodes]
        for c, node in enumerate(nodes):
            for read in node.reads:
                readers[read.source].append((c, read))
        never = np.iinfo(np.int64).max
        steps = [node.ready.copy() for node in nodes]
        for i in range(len(nodes) - 1, 0, -1):
            ready = nodes[i].ready
            h, w = ready.shape
            if i == len(nodes) - 1:
                needed = np.arange(size * size).reshape(size, size)  # the head: when its pixel is sampled
            else:
                needed = np.full((h, w), never)
                one_hot = np.eye(h * w, dtype=np.int64).reshape(h * w, h, w)
                for c, read in readers[i]:
                    reads_it = read.spread(one_hot) > 0  # (h*w, reader's h, w): which reader positions read it
                    first = np.where(reads_it, steps[c][None], never).reshape(h * w, -1).min(axis=1)
                    needed = np.minimum(needed, first.reshape(h, w))
                needed = np.where(needed == never, ready, needed)
            assert (needed >= ready).all(), "a position needed before it can be computed"
            row = needed.min(axis=1, keepdims=True)
            whole = (row >= ready.max(axis=1, keepdims=True)).repeat(w, axis=1)
            steps[i] = np.where(whole, row.repeat(w, axis=1), needed)
        return steps

    def macs(self) -> int:
        """Multiply-adds per sample: one forward pass."""
        return self.graph.macs()

    def steps(self, batch: int) -> Steps:
        """Steps for ``batch`` rows, zeroed: from the pool (a pooled Steps serves one sampling at a time, and
        interleaved samplings each hold their own) or new. ``release`` gives it back."""
        free = self._pool.get(batch)
        if free:
            steps = free.pop()
            steps.buffers.zero()
            return steps
        return Steps(self, batch)

    def release(self, steps: Steps, batch: int) -> None:
        if batch > POOLED_MAX_BATCH:
            return
        if batch not in self._pool and len(self._pool) >= POOLED_SIZES:
            del self._pool[next(iter(self._pool))]  # the batch size pooled longest ago
        self._pool.setdefault(batch, []).append(steps)

    def sample(self, noise: torch.Tensor, piece: int = 28) -> Generator[None, None, torch.Tensor]:
        """The sequential sample of ``noise``: H*W steps; yields every ``piece`` steps (a place to pause)."""
        size, mix, batch = self.size, self.nr_mix, noise.shape[0]
        steps = self.steps(batch)
        gumbel, logistic = noise_terms(noise[:, :mix], noise[:, mix:])
        out = torch.empty(batch, self.channels, size, size, dtype=torch.long, device=noise.device)
        try:
            with torch.no_grad():
                for n, tasks in enumerate(steps.tasks):
                    for task in tasks:
                        task()
                    i, j = divmod(n, size)
                    terms = gumbel[:, :, i : i + 1, j : j + 1], logistic[:, :, i : i + 1, j : j + 1]
                    levels = dmol_sample_terms(steps.params[n], *terms, mix)
                    steps.pixels[n].copy_(from_levels(levels))
                    out[:, :, i, j] = levels[:, :, 0, 0]
                    if (n + 1) % piece == 0:
                        yield
        finally:
            self.release(steps, batch)
        return out.flatten(2).transpose(1, 2)

    def params(self, images: torch.Tensor) -> torch.Tensor:
        """Every pixel's parameters (B, P, H, W) for known images (B, C, H, W) in [-1, 1], each node computed
        once on its whole grid (tests compare this layout with the reference map)."""
        graph, size = self.graph, self.size
        buffers = Buffers(graph, images.shape[0], images.device)
        with torch.no_grad():
            at(buffers.tensors[0], (0, size, 0, size))[:, : self.channels] = images
            for index in range(1, len(graph.nodes)):
                h = size >> graph.nodes[index].level
                buffers.run(index, [(0, h, 0, h)])
        return at(buffers.tensors[-1], (0, size, 0, size)).clone()
