"""The PixelCNN++ family: sampling 8-bit images as a lower-triangular system of pixels (Song et al., ICML 2021,
arXiv 2002.03629).

Unknown t is pixel t in raster order, a vector of C integer levels 0..255 (its sub-pixels are coupled inside
the head, so one pixel is one unknown). With fixed uniforms per pixel, drawn before solving (mixture choice by
Gumbel-max, value by the logistic inverse CDF, rounded to its 8-bit bin), pixel t is a deterministic function of
the pixels before it, and convergence is an exact integer test.

The network runs band by band with per-layer caches (``models.pixelcnnpp_bands``): an evaluation recomputes only
from the first band whose inputs were not yet final at the previous evaluation, down to the last band the solver
will read. So the sequential sampler is the cached one (a band per pixel, not the whole image), Jacobi skips its
frozen prefix and GS-Jacobi its frozen prefix and everything below its window. Every method computes the same
banded map, bit for bit.

The benchmarks' baselines (every band every time; the textbook whole-image forward) are variants of this system
in ``benchmarks/baselines.py``.

Shapes: x (N, H*W, C) long levels; noise (N, nr_mix + C, H, W) uniforms (mixture choice first, then values).
"""

from __future__ import annotations

from typing import Any

import torch

from models.dmol import dmol_sample, from_levels
from models.pixelcnnpp import PixelCNNpp
from models.pixelcnnpp_bands import BAND, BandCache, BandedPixelCNNpp
from models.registry import Entry
from samplers.noise import uniforms
from samplers.sampling import PLAIN, SamplerFamily, sampling_offer
from samplers.system import Plan


class PixelCNNppFamily(SamplerFamily):
    name = "pixelcnnpp"
    offers = sampling_offer(PLAIN, auto_key="pixelcnnpp")

    def describe(self, entry: Entry) -> tuple[list[int], int]:
        size, channels = int(entry.config.get("image_size", 28)), int(entry.config.get("channels", 1))
        return [channels, size, size], size * size

    def system(self, model: torch.nn.Module, name: str) -> PixelCNNppSystem:
        assert isinstance(model, PixelCNNpp)
        return PixelCNNppSystem(model, name)


class PixelCNNppSystem:
    dtype = torch.long
    levels = 256
    methods: tuple[str, ...] = PLAIN

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

    def draw_noise(self, seed: int, indices: list[int] | range) -> torch.Tensor:
        shape = (self.nr_mix + self.channels, self.size, self.size)
        return uniforms(self.name, seed, indices, shape).to(self.device)

    def initial_guess(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.zeros(noise.shape[0], self.unknowns, self.channels, dtype=torch.long, device=noise.device)

    def plan(self, method: str) -> Plan:
        return Plan(method, self.evaluate, "evaluate")

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
