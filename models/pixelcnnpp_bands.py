"""PixelCNN++ evaluated band by band with per-layer caches: the "frozen prefix" made cheap.

Every PixelCNN++ layer is row-causal: its row r depends only on rows <= r of its inputs (at the matching
resolution; the top padding is the only thing above row 0). So the network can run top to bottom in horizontal
bands of ``BAND`` = 4 full-resolution rows (2 at half, 1 at quarter resolution): a band passes through every
layer, reading one row of context above it from each layer's cache, and leaves its own rows in the caches. Rows
whose inputs are final never need recomputing: the cached sequential sampler computes one band per pixel instead
of the whole image, Jacobi starts at the first band that can still change, GS-Jacobi stops at its window
(Ramachandran et al., "Fast Generation for Convolutional Autoregressive Models", arXiv 1704.06001, in spirit).

Exactness: every convolution here is called with one fixed shape per layer (band rows plus context, full width,
batch padded to a multiple of 8), so identical inputs take the identical kernel and give identical bits, whichever
bands, rows or method asked. One exception had to be designed out: oneDNN runs 1x1 convolutions as a GEMM over
batch x pixels, whose rounding depends on a row's position when bands are tiny; here a 1x1 convolution is run
as the same-valued 2x1 direct convolution with an exact-zero top tap (measured invariant, 1-16 threads; see
tests). The banded map agrees with ``PixelCNNpp.forward`` to float32 rounding, not bit for bit: all parafeed
sampling methods use the banded map.

Shapes: images (P, C, H, W) in [-1, 1]; params (P, nr_mix * (1 + 2C + C(C-1)/2), H, W); slots (P,) cache rows.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from models.invariance import padded_rows
from models.pixelcnnpp import GatedResnet, PixelCNNpp, blocks, concat_elu, right_shift

BAND = 4  # full-resolution rows per band: one row at the coarsest (quarter) resolution


class BandCache:
    """Activations of every context-reading layer, per cache slot, plus which rows of them are final."""

    def __init__(self, capacity: int, height: int, device: torch.device) -> None:
        self.capacity, self.height, self.device = capacity, height, device
        self.scratch = 8  # extra slots for batch padding (at most 7 rows), written but never read back
        self.tensors: list[torch.Tensor] = []
        self.valid = torch.zeros(capacity, dtype=torch.long, device=device)  # final rows, a multiple of BAND

    def reset(self, slots: torch.Tensor) -> None:
        """New occupants: nothing of theirs is cached."""
        self.valid[slots] = 0


class BandedPixelCNNpp:
    def __init__(self, model: PixelCNNpp) -> None:
        if model.config.image_size % BAND:
            raise ValueError(f"image_size must be a multiple of {BAND}")
        self.model = model
        self.size = model.config.image_size
        self.bands = self.size // BAND
        self._tall: dict[int, torch.Tensor] = {}  # 1x1 weights as (Co, Ci, 2, 1) with a zero top tap

    def new_cache(self, capacity: int) -> BandCache:
        return BandCache(capacity, self.size, next(self.model.parameters()).device)

    # -- the pass ---------------------------------------------------------------------------------------
    def __call__(
        self, images: torch.Tensor, cache: BandCache, slots: torch.Tensor, first: int, last: int
    ) -> torch.Tensor:
        """Parameters for rows [first*BAND, last*BAND) of every image, computed band by band.

        The caller guarantees that each slot's cached rows below ``first * BAND`` hold activations of its
        current (final) inputs there. Rows outside the range are returned as zeros.
        """
        p = images.shape[0]
        pad = padded_rows(p) - p
        if pad:
            scratch = torch.arange(cache.capacity, cache.capacity + pad, device=slots.device)
            slots = torch.cat([slots, scratch])
            images = torch.cat([images, images.new_zeros(pad, *images.shape[1:])])
        x = torch.cat([images, torch.ones_like(images[:, :1])], dim=1)
        out = images.new_zeros(images.shape[0], self.model.out.out_channels, self.size, self.size)
        for band in range(first, last):
            rows = slice(band * BAND, (band + 1) * BAND)
            out[:, :, rows] = self._band(x, cache, slots, band)
        return out[:p]

    def _band(self, x: torch.Tensor, cache: BandCache, slots: torch.Tensor, band: int) -> torch.Tensor:
        m = self.model
        self._slot, self._cache, self._slots = 0, cache, slots
        a = band * BAND
        # Inputs: the image rows come straight from the iterate (zeros above the top, as F.pad would give).
        u = self._conv(m.u_init, _rows(x, a - 2, a + BAND - 1))  # u_init output rows a-1..a+2, then down-shift
        ul_up = self._conv(m.ul_init_up, _rows(x, a - 1, a + BAND - 1))
        ul_left = right_shift(self._conv(m.ul_init_left, _rows(x, a - 1, a + BAND)))
        if a == 0:  # the down-shift brings in zeros at the top row
            u, ul_up = _zero_top(u), _zero_top(ul_up)
        ul = ul_up + ul_left
        us, uls = [u], [ul]
        for level in range(3):
            start, height = self._rows(band, level)
            for block_u, block_ul in zip(blocks(m.up_u, level), blocks(m.up_ul, level), strict=True):
                u = self._gated(block_u, u, None, start, height, level)
                ul = self._gated(block_ul, ul, u, start, height, level)
                us.append(u)
                uls.append(ul)
            if level < 2:
                u = self._conv(m.downsize_u[level], self._context(u, start, height, level), stride=2)
                ul = self._conv(m.downsize_ul[level], self._context(ul, start, height, level), stride=2)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for depth in range(3):
            level = 2 - depth
            start, height = self._rows(band, level)
            for block_u, block_ul in zip(blocks(m.down_u, depth), blocks(m.down_ul, depth), strict=True):
                u = self._gated(block_u, u, us.pop(), start, height, level)
                ul = self._gated(block_ul, ul, torch.cat([u, uls.pop()], dim=1), start, height, level)
            if depth < 2:
                u, ul = m.upsize_u[depth](u), m.upsize_ul[depth](ul)
        return self._nin(m.out, F.elu(ul))

    # -- helpers ----------------------------------------------------------------------------------------
    def _rows(self, band: int, level: int) -> tuple[int, int]:
        """(first row, rows) of this band at resolution ``level`` (0: full, 1: half, 2: quarter)."""
        height = BAND >> level
        return band * height, height

    def _context(self, value: torch.Tensor, start: int, height: int, level: int) -> torch.Tensor:
        """Cache this band's rows of ``value``; return them with the one row above (cached; zeros at the top)."""
        cache, slots = self._cache, self._slots
        if self._slot == len(cache.tensors):
            full = (cache.capacity + cache.scratch, value.shape[1], self.size >> level, value.shape[3])
            cache.tensors.append(value.new_zeros(full))
        store = cache.tensors[self._slot]
        self._slot += 1
        store[slots, :, start : start + height] = value
        if start == 0:
            above = value.new_zeros(value.shape[0], value.shape[1], 1, value.shape[3])
        else:
            above = store[slots, :, start - 1 : start]
        return torch.cat([above, value], dim=2)

    def _gated(
        self, block: nn.Module, x: torch.Tensor, a: torch.Tensor | None, start: int, height: int, level: int
    ) -> torch.Tensor:
        """GatedResnet.forward on one band, its two context-reading convolutions fed from the caches."""
        assert isinstance(block, GatedResnet)
        h = self._conv(block.conv_in, concat_elu(self._context(x, start, height, level)))
        if block.skip is not None and a is not None:
            h = h + self._nin(block.skip, concat_elu(a))
        h = self._conv(block.conv_out, concat_elu(self._context(h, start, height, level)))
        value, gate = h.chunk(2, dim=1)
        return x + value * torch.sigmoid(gate)

    def _nin(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """A 1x1 convolution computed as a 2x1 direct convolution whose top tap is exactly zero."""
        key = id(conv)
        if key not in self._tall:
            weight = conv.weight
            self._tall[key] = torch.cat([torch.zeros_like(weight), weight], dim=2)  # (Co, Ci, 2, 1)
        return F.conv2d(F.pad(x, (0, 0, 1, 0)), self._tall[key], conv.bias)

    @staticmethod
    def _conv(conv: nn.Module, window: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """A shifted convolution on a window that already holds its context rows: only horizontal padding."""
        assert isinstance(conv, nn.Conv2d)
        left, right, _, _ = cast(tuple[int, int, int, int], conv.shift_pad)
        return F.conv2d(F.pad(window, (left, right, 0, 0)), conv.weight, conv.bias, stride=stride)


def _rows(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of x, with zero rows standing in for rows above the image."""
    if lo >= 0:
        return x[:, :, lo:hi]
    return torch.cat([x.new_zeros(x.shape[0], x.shape[1], -lo, x.shape[3]), x[:, :, :hi]], dim=2)


def _zero_top(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(t[:, :, :1]), t[:, :, 1:]], dim=2)
