"""The PixelCNN++ family: sampling 8-bit images as a lower-triangular system of pixels (Song et al., ICML 2021,
arXiv 2002.03629).

Unknown t is pixel t in raster order, a vector of C integer levels 0..255 (its sub-pixels are coupled inside
the head, so one pixel is one unknown). With fixed uniforms per pixel, drawn before solving (mixture choice by
Gumbel-max, value by the logistic inverse CDF, rounded to its 8-bit bin), pixel t is a deterministic function of
the pixels before it, and convergence is an exact integer test.

The reference map runs band by band with per-layer caches (``models.pixelcnnpp_bands``): an evaluation recomputes
only from the first band whose inputs were not yet final at the previous evaluation, down to the last band the
solver will read. ``sequential_naive`` (the reference sampler: a band per pixel), Jacobi (which skips its frozen
prefix) and GS-Jacobi (its frozen prefix and everything below its window) compute that map, bit for bit.

``sequential`` is the work-optimal sequential sampler (``models.pixelcnnpp_incremental``, Fast PixelCNN++ in
spirit: each layer position computed once, about one forward pass of arithmetic in H*W small steps) and
``jacobi_window`` is Jacobi over the same per-layer caches, recomputing only rows that can still change
(``models.pixelcnnpp_window``). Both sum in other shapes than the reference map, so their samples are candidates
that one evaluation of the reference map certifies (``samplers.certify``); a failing row is finished by Jacobi.

The benchmarks' baselines (every band every time; the textbook whole-image forward) are variants of this system
in ``benchmarks/baselines.py``.

Shapes: x (N, H*W, C) long levels; noise (N, nr_mix + C, H, W) uniforms (mixture choice first, then values).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import torch

from models.dmol import dmol_sample, from_levels
from models.pixelcnnpp import PixelCNNpp
from models.pixelcnnpp_bands import BAND, BandCache, BandedPixelCNNpp
from models.pixelcnnpp_incremental import IncrementalPixelCNNpp
from models.pixelcnnpp_window import DEFAULT_WINDOW, WindowedPixelJacobi
from models.registry import Entry
from samplers.family import Cost
from samplers.noise import uniforms
from samplers.sampling import FAST, WINDOW, SamplerFamily, fast_plan, sampling_offer
from samplers.system import Plan


class PixelCNNppFamily(SamplerFamily):
    name = "pixelcnnpp"
    offers = sampling_offer(FAST, auto_key="pixelcnnpp")

    def describe(self, entry: Entry) -> tuple[list[int], int]:
        size, channels = int(entry.config.get("image_size", 28)), int(entry.config.get("channels", 1))
        return [channels, size, size], size * size

    def cost(self, task: str, request: Any, entry: Entry, method: str) -> Cost:
        """Rows, and for the fast paths their per-layer buffers: about (8 + 10 nr_resnet) full-resolution maps of
        nr_filters channels per row, a third more for the lower resolutions (4.4 MB a row on the shipped model)."""
        base = super().cost(task, request, entry, method)
        if method not in ("sequential", WINDOW):
            return base
        size, filters = int(entry.config.get("image_size", 28)), int(entry.config.get("nr_filters", 32))
        maps = 8 + 10 * int(entry.config.get("nr_resnet", 2))
        per_row = int(4 * maps * filters * (size + 1) * (size + 2) * 4 / 3)
        return Cost(base.memory + request.num_samples * per_row, base.flops, base.field)

    def system(self, model: torch.nn.Module, name: str) -> PixelCNNppSystem:
        assert isinstance(model, PixelCNNpp)
        return PixelCNNppSystem(model, name)


class PixelCNNppSystem:
    dtype = torch.long
    levels = 256
    methods: tuple[str, ...] = FAST

    def __init__(self, model: PixelCNNpp, name: str) -> None:
        self.model, self.name = model, name
        cfg = model.config
        self.channels, self.size, self.nr_mix = cfg.channels, cfg.image_size, cfg.nr_mix
        self.unknowns = cfg.image_size**2
        self.unknown_shape: tuple[int, ...] = (cfg.channels,)
        self.image_shape = (cfg.channels, cfg.image_size, cfg.image_size)
        self.block_size = cfg.image_size
        self.device = next(model.parameters()).device
        self.banded = BandedPixelCNNpp(model)
        self.incremental: IncrementalPixelCNNpp | None = None  # the fast paths' layout, built on first use
        self.fast_macs = 0  # multiply-adds per row the fast paths have done (the benchmarks read it)
        self.bands_done = 0  # bands x rows the reference map has computed (the benchmarks read it)

    def draw_noise(self, seed: int, indices: list[int] | range) -> torch.Tensor:
        shape = (self.nr_mix + self.channels, self.size, self.size)
        return uniforms(self.name, seed, indices, shape).to(self.device)

    def initial_guess(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.zeros(noise.shape[0], self.unknowns, self.channels, dtype=torch.long, device=noise.device)

    def plan(self, method: str) -> Plan:
        fast = fast_plan(method, self.evaluate, self.propose_sequential, self.propose_window)
        return fast if fast is not None else Plan(method, self.evaluate, "evaluate")

    def layout(self) -> IncrementalPixelCNNpp:
        if self.incremental is None:
            self.incremental = IncrementalPixelCNNpp(self.model)
        return self.incremental

    def propose_sequential(
        self, noise: torch.Tensor, block_size: int | None = None
    ) -> Generator[None, None, tuple[torch.Tensor, list[int]]]:
        """The incremental sequential sample of ``noise``: H*W steps, each layer position computed once."""
        sampler = self.layout()
        x = yield from sampler.sample(noise)
        self.fast_macs += sampler.macs()
        return x, [self.unknowns] * noise.shape[0]

    def propose_window(
        self, noise: torch.Tensor, block_size: int | None = None
    ) -> Generator[None, None, tuple[torch.Tensor, list[int]]]:
        """Windowed cached Jacobi: pixels [F, F + block_size) per iteration; depth = its iterations."""
        solver = WindowedPixelJacobi(self.layout(), block_size or DEFAULT_WINDOW)
        x, iterations = yield from solver.solve(noise)
        self.fast_macs += solver.computed
        return x, iterations

    def new_cache(self, capacity: int) -> BandCache:
        return self.banded.new_cache(capacity)

    def reset(self, cache: Any, slots: torch.Tensor) -> None:
        cache.reset(slots)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C) levels -> (N, C, H, W) in [-1, 1]."""
        return from_levels(x.transpose(1, 2).reshape(x.shape[0], self.channels, self.size, self.size))

    def band_range(self, cache: BandCache | None, slots: torch.Tensor, span: torch.Tensor | None) -> tuple[int, int]:
        """Bands [first, last) to compute: from the earliest band not cached for every row, to the last read."""
        bands = self.size // BAND
        if cache is None or span is None:
            return 0, bands
        first = int(cache.valid[slots].min()) // BAND
        last_row = -(-int(span[:, 1].max()) // self.size)
        return first, min(bands, -(-last_row // BAND))

    def evaluate(
        self,
        x: torch.Tensor,
        noise: torch.Tensor,
        cache: BandCache | None = None,
        slots: torch.Tensor | None = None,
        span: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n = x.shape[0]
        if cache is None or slots is None:
            cache, slots, span = self.banded.new_cache(n), torch.arange(n, device=x.device), None
        first, last = self.band_range(cache, slots, span)
        params = self.banded(self.to_images(x), cache, slots, first, last)
        self.bands_done += (last - first) * n
        r0, r1 = first * BAND, last * BAND
        levels = dmol_sample(
            params[:, :, r0:r1], noise[:, : self.nr_mix, r0:r1], noise[:, self.nr_mix :, r0:r1], self.nr_mix
        )
        y = x.clone()
        y[:, r0 * self.size : r1 * self.size] = levels.flatten(2).transpose(1, 2)
        if span is not None:
            # Rows above the final prefix were computed from final inputs: their activations can be kept.
            final_rows = span[:, 0] // self.size
            cache.valid[slots] = torch.maximum(cache.valid[slots], final_rows // BAND * BAND)
        return y

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], *self.image_shape)
