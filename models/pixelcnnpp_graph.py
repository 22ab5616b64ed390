"""PixelCNN++ as a graph of position-wise nodes, each knowing when each of its positions can be computed.

This is the layout behind the incremental samplers (``models.pixelcnnpp_incremental``), in the spirit of Fast
PixelCNN++ (Ramachandran et al., "Fast Generation for Convolutional Autoregressive Models", arXiv 1704.06001):
every layer keeps its activations in a buffer, and a position of a layer is computed once, as soon as the pixels
it depends on exist. A node is one fused piece of the network: a shifted convolution, a shift, the first or the
second half of a gated residual block, a strided down-sampling, a transposed up-sampling, the output 1x1.

``ready[i, j]`` of a node is the number of pixels (raster order) its position (i, j) depends on: it can be
computed once pixels 0 .. ready-1 are known. Ready maps are derived from the graph itself (max over each node's
receptive window, zero padding known from the start), and the output node's map proves the autoregressive
property, ready[i, j] <= i * W + j, when the graph is built. This replaces hand-written delays for the down- and
up-sampling streams: a half-resolution position becomes ready every second pixel of every second row, and what its
transposed convolution feeds becomes ready with it.

Buffers carry a zero margin (one row on top, one column on each side) that stands for the convolutions' zero
padding and the shifts' zero row and column, so every read is a plain slice (``Read``: which buffer, which slice of
it a rect needs). Values agree with ``PixelCNNpp.forward`` to float32 rounding (sums run in other shapes): the
samplers' results are candidates that ``samplers.certify`` certifies.

Shapes: buffers (B, C, h + 1, w + 2) for a node at resolution (h, w); rects (r0, r1, c0, c1) of its positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.pixelcnnpp import GatedResnet, PixelCNNpp, blocks, concat_elu

Rect = tuple[int, int, int, int]  # rows [r0, r1), columns [c0, c1) of a node's own resolution
Slicer = Callable[[torch.Tensor, Rect], torch.Tensor]  # (source buffer, rect) -> the slice the rect reads
Spread = Callable[[np.ndarray], np.ndarray]  # a map over the source -> per own position, its max over what is read
Compute = Callable[[list[torch.Tensor], Rect], torch.Tensor]  # (slices read, rect) -> values on the rect


@dataclass(frozen=True)
class Read:
    """What a node reads of one source: the slice for a rect, and (for ready maps) the max over that slice."""

    source: int
    slicer: Slicer
    spread: Spread


def same(ready: np.ndarray) -> np.ndarray:
    return ready


@dataclass
class Node:
    """One fused piece of the network: ``compute`` maps the slices of ``reads`` to its values on a rect."""

    name: str
    channels: int
    level: int  # resolution: size >> level
    ready: np.ndarray  # (h, w) int: pixels each position depends on
    reads: list[Read] = field(repr=False)
    compute: Compute = field(repr=False)
    macs: int  # multiply-adds per position


def at(buffer: torch.Tensor, rect: Rect, rows: int = 0, cols: int = 0) -> torch.Tensor:
    """The rect's own positions of a margined buffer, shifted down by ``rows`` and right by ``cols``."""
    r0, r1, c0, c1 = rect
    return buffer[:, :, 1 + r0 - rows : 1 + r1 - rows, 1 + c0 - cols : 1 + c1 - cols]


def shifted(source: int, rows: int, cols: int) -> Read:
    """A shift down by ``rows`` and right by ``cols`` (zeros come in from the margin)."""
    return Read(source, lambda buffer, rect: at(buffer, rect, rows, cols), lambda m: shift_ready(m, rows, cols))


def shift_ready(ready: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Ready map (..., h, w) of a shift down by ``rows`` / right by ``cols`` (zeros come in: known from the start)."""
    out = np.zeros_like(ready)
    out[..., rows:, cols:] = ready[..., : ready.shape[-2] - rows, : ready.shape[-1] - cols]
    return out


class Conv:
    """A (shifted, possibly strided) convolution of the model, applied to slices of margined buffers.

    One output position is a GEMV on its flattened window (``addmm``): for the one-position steps of sequential
    sampling that is several times cheaper than a convolution call on a 2x3 input. Larger rects use conv2d.
    Weights are taken at build time: the graph is built once per model, weights frozen.
    """

    def __init__(self, module: nn.Module, stride: int = 1) -> None:
        assert isinstance(module, nn.Conv2d)
        assert module.bias is not None
        self.weight, self.bias = module.weight.detach(), module.bias.detach()
        self.kh, self.kw = cast(tuple[int, int], module.kernel_size)
        self.left, self.right, self.top, _ = cast(tuple[int, int, int, int], getattr(module, "shift_pad", (0,) * 4))
        self.stride = stride
        self.flat = self.weight.reshape(self.weight.shape[0], -1).t().contiguous()  # (Cin*kh*kw, Cout)
        self.macs = int(self.weight.numel())  # per output position
        self.out_channels = int(self.weight.shape[0])

    def ready(self, ready: np.ndarray) -> np.ndarray:
        """Ready map (..., h, w) of the output: the max over each position's window, padding known from the
        start."""
        lead, (h, w) = ready.shape[:-2], ready.shape[-2:]
        padded = F.pad(torch.from_numpy(ready).double().reshape(-1, 1, h, w), (self.left, self.right, self.top, 0))
        out = F.max_pool2d(padded, (self.kh, self.kw), stride=self.stride)
        return out.long().numpy().reshape(*lead, *out.shape[-2:])

    def window(self, buffer: torch.Tensor, rect: Rect) -> torch.Tensor:
        """The slice of a margined buffer this convolution reads to produce ``rect`` (padding in place)."""
        r0, r1, c0, c1 = rect
        s = self.stride
        rows = slice(1 + r0 * s - self.top, 1 + (r1 - 1) * s - self.top + self.kh)
        cols = slice(1 + c0 * s - self.left, 1 + (c1 - 1) * s - self.left + self.kw)
        return buffer[:, :, rows, cols]

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        """Valid convolution of a window (B, Cin, rows, cols) -> (B, Cout, rows', cols')."""
        if values.shape[2] == self.kh and values.shape[3] == self.kw:
            return torch.addmm(self.bias, values.reshape(values.shape[0], -1), self.flat)[:, :, None, None]
        return F.conv2d(values, self.weight, self.bias, stride=self.stride)

    def celu(self, values: torch.Tensor) -> torch.Tensor:
        """This convolution of concat_elu(values): on one position, concat_elu of the flattened window (the
        flattened weights already read the positive half first)."""
        if values.shape[2] == self.kh and values.shape[3] == self.kw:
            flat = flat_elu(values.reshape(values.shape[0], -1))
            return torch.addmm(self.bias, flat, self.flat)[:, :, None, None]
        return F.conv2d(concat_elu(values), self.weight, self.bias, stride=self.stride)


class Deconv:
    """The model's stride-2 transposed convolutions, cropped as ``DownShiftedDeconv``: output row R reads input
    row R // 2; uncropped column C reads input columns ceil((C - kw + 1) / 2) .. C // 2 (the right margin stands
    for the zero beyond the edge)."""

    def __init__(self, module: nn.Module) -> None:
        assert isinstance(module, nn.ConvTranspose2d)
        self.weight, self.bias = module.weight.detach(), module.bias
        self.kh, self.kw = cast(tuple[int, int], module.kernel_size)
        self.crop = (self.kw - 1) // 2
        self.macs = int(self.weight.numel()) // 4  # a stride-2 output position sees a quarter of the taps
        self.out_channels = int(self.weight.shape[1])

    def _inputs(self, rect: Rect) -> tuple[int, int]:
        r0, _, c0, _ = rect
        return r0 // 2, -((c0 + self.crop - self.kw + 1) // -2)

    def window(self, buffer: torch.Tensor, rect: Rect) -> torch.Tensor:
        _, r1, _, c1 = rect
        i0, j0 = self._inputs(rect)
        return buffer[:, :, 1 + i0 : 2 + (r1 - 1) // 2, 1 + j0 : 2 + (c1 - 1 + self.crop) // 2]

    def __call__(self, values: torch.Tensor, rect: Rect) -> torch.Tensor:
        r0, r1, c0, c1 = rect
        i0, j0 = self._inputs(rect)
        full = F.conv_transpose2d(values, self.weight, self.bias, stride=2)
        col0 = c0 + self.crop - 2 * j0
        return full[:, :, r0 - 2 * i0 : r1 - 2 * i0, col0 : col0 + c1 - c0]

    def ready(self, ready: np.ndarray) -> np.ndarray:
        h, w = ready.shape[-2:]
        full = np.zeros((*ready.shape[:-2], 2 * h + self.kh, 2 * w + self.kw), dtype=ready.dtype)
        for kr in range(self.kh):
            for kc in range(self.kw):
                view = full[..., kr : kr + 2 * h : 2, kc : kc + 2 * w : 2]
                np.maximum(view, ready, out=view)
        return full[..., : 2 * h, self.crop : self.crop + 2 * w]


class PixelGraph:
    """The nodes of a PixelCNN++ in evaluation order (node 0: the image and its constant channel)."""

    def __init__(self, model: PixelCNNpp) -> None:
        cfg = model.config
        self.model = model
        self.size, self.channels, self.nr_mix = cfg.image_size, cfg.channels, cfg.nr_mix
        self.nodes: list[Node] = []
        self._build()
        out = self.nodes[-1].ready
        if (out > np.arange(self.size**2).reshape(self.size, self.size)).any():
            raise ValueError("the network's output at some pixel depends on that pixel or a later one")

    def _add(self, name: str, channels: int, level: int, reads: list[Read], compute: Compute, macs: int = 0
             ) -> int:  # fmt: skip
        """A node; its ready map is the max over everything it reads."""
        ready = self.derive(reads, [node.ready for node in self.nodes])
        self.nodes.append(Node(name, channels, level, ready, reads, compute, macs))
        return len(self.nodes) - 1

    @staticmethod
    def derive(reads: list[Read], maps: list[np.ndarray]) -> np.ndarray:
        """Per position of a node reading ``reads``: the max of ``maps`` (one per node) over what it reads."""
        return np.maximum.reduce([read.spread(maps[read.source]) for read in reads])

    def _conv(self, name: str, conv: Conv, source: int, level: int) -> int:
        return self._add(name, conv.out_channels, level, [Read(source, conv.window, conv.ready)],
                         lambda v, r: conv(v[0]), conv.macs)  # fmt: skip

    def _build(self) -> None:
        m, f, n = self.model, self.model.config.nr_filters, self.size
        pixels = np.arange(1, n * n + 1).reshape(n, n)  # pixel (i, j) is known once i*W+j+1 pixels are
        self.nodes.append(Node("x", self.channels + 1, 0, pixels, [], _unused, 0))
        x = 0
        u = self._conv("u_init", Conv(m.u_init), x, 0)
        u = self._add("u_init.shift", f, 0, [shifted(u, 1, 0)], lambda v, r: v[0])
        up = self._conv("ul_init.up", Conv(m.ul_init_up), x, 0)
        left = self._conv("ul_init.left", Conv(m.ul_init_left), x, 0)
        ul = self._add("ul_init.shift", f, 0, [shifted(up, 1, 0), shifted(left, 0, 1)], lambda v, r: v[0] + v[1])
        us, uls = [u], [ul]
        for level in range(3):
            for block_u, block_ul in zip(blocks(m.up_u, level), blocks(m.up_ul, level), strict=True):
                u = self._gated(f"up{level}.u", block_u, u, [], level)
                ul = self._gated(f"up{level}.ul", block_ul, ul, [u], level)
                us.append(u)
                uls.append(ul)
            if level < 2:
                u = self._conv(f"downsize{level}.u", Conv(m.downsize_u[level], stride=2), u, level + 1)
                ul = self._conv(f"downsize{level}.ul", Conv(m.downsize_ul[level], stride=2), ul, level + 1)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for depth in range(3):
            level = 2 - depth
            for block_u, block_ul in zip(blocks(m.down_u, depth), blocks(m.down_ul, depth), strict=True):
                u = self._gated(f"down{depth}.u", block_u, u, [us.pop()], level)
                ul = self._gated(f"down{depth}.ul", block_ul, ul, [u, uls.pop()], level)
            if depth < 2:
                u = self._upsize(f"upsize{depth}.u", Deconv(m.upsize_u[depth]), u, level - 1)
                ul = self._upsize(f"upsize{depth}.ul", Deconv(m.upsize_ul[depth]), ul, level - 1)
        head = Conv(m.out)
        self._add("out", head.out_channels, 0, [Read(ul, at, same)], lambda v, r: head(F.elu(v[0])), head.macs)

    def _gated(self, name: str, block: nn.Module, x: int, skips: list[int], level: int) -> int:
        """GatedResnet as two nodes: h = conv_in(celu(x)) + skip(celu(a)), then x + gate(conv_out(celu(h)))."""
        assert isinstance(block, GatedResnet)
        conv_in, conv_out = Conv(block.conv_in), Conv(block.conv_out)
        skip = None if block.skip is None else Conv(block.skip)

        if skip is not None:  # one GEMV for one position: [celu(window), celu(a)] against both weights stacked
            k1, k2 = conv_in.flat.shape[0] // 2, skip.flat.shape[0] // 2
            stacked = torch.cat([conv_in.flat[:k1], skip.flat[:k2], conv_in.flat[k1:], skip.flat[k2:]])
            bias = conv_in.bias + skip.bias

        def first(v: list[torch.Tensor], rect: Rect) -> torch.Tensor:
            one = rect[1] - rect[0] == 1 and rect[3] - rect[2] == 1
            if skip is None:
                return conv_in.celu(v[0])
            if one:
                flat = torch.cat([t.reshape(t.shape[0], -1) for t in v], dim=1)
                return torch.addmm(bias, flat_elu(flat), stacked)[:, :, None, None]
            return conv_in(concat_elu(v[0])) + skip(concat_elu(v[1] if len(v) == 2 else torch.cat(v[1:], dim=1)))

        def second(v: list[torch.Tensor], rect: Rect) -> torch.Tensor:
            value, gate = conv_out.celu(v[1]).chunk(2, dim=1)
            return torch.addcmul(v[0], value, torch.sigmoid(gate))

        macs = conv_in.macs + (skip.macs if skip is not None else 0)
        reads = [Read(x, conv_in.window, conv_in.ready), *(Read(s, at, same) for s in skips)]
        h = self._add(name + ".h", conv_in.out_channels, level, reads, first, macs)
        reads = [Read(x, at, same), Read(h, conv_out.window, conv_out.ready)]
        return self._add(name, conv_in.out_channels, level, reads, second, conv_out.macs)

    def _upsize(self, name: str, deconv: Deconv, source: int, level: int) -> int:
        return self._add(name, deconv.out_channels, level, [Read(source, deconv.window, deconv.ready)],
                         lambda v, r: deconv(v[0], r), deconv.macs)  # fmt: skip

    def rects(self, index: int, lo: int, hi: int, steps: np.ndarray | None = None) -> list[Rect]:
        """The positions of node ``index`` with lo < ready <= hi (or lo < steps <= hi, for another map over its
        positions), as rects (rows with equal spans merged)."""
        ready = self.nodes[index].ready if steps is None else steps
        mask = (ready > lo) & (ready <= hi)
        out: list[Rect] = []
        for r in np.flatnonzero(mask.any(axis=1)):
            cols = np.flatnonzero(mask[r])
            for run in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1):
                c0, c1 = int(run[0]), int(run[-1]) + 1
                if out and out[-1][1] == r and out[-1][2:] == (c0, c1):
                    out[-1] = (out[-1][0], int(r) + 1, c0, c1)
                else:
                    out.append((int(r), int(r) + 1, c0, c1))
        return out

    def macs(self) -> int:
        """Multiply-adds of one forward pass: every position of every node once."""
        return sum(node.macs * node.ready.size for node in self.nodes)


def flat_elu(flat: torch.Tensor) -> torch.Tensor:
    """concat_elu of flattened features (B, K) -> (B, 2K)."""
    return F.elu(torch.cat([flat, -flat], dim=1))


def _unused(v: list[torch.Tensor], rect: Rect) -> torch.Tensor:
    raise AssertionError("the image node is written by the sampler, not computed")
