"""PixelCNN++ (Salimans, Karpathy, Chen, Kingma, ICLR 2017, arXiv 1701.05517).

Two streams of shifted convolutions: the "up" stream u sees the rows strictly above a pixel (down-shifted 2x3
kernels), the "up-left" stream ul also sees the pixels to its left in its own row (down-right-shifted 2x2
kernels); gated residual blocks at three resolutions (H, H/2, H/4) in an encoder pass and a decoder pass with
skip connections; a discretized mixture of logistics over 256 levels per sub-pixel (``models.dmol``).

Invariant (what the parallel samplers rely on): the output for pixel (i, j) depends only on pixels before (i, j)
in raster order (all channels of them); within a pixel, channels are coupled in the head (R, then G given R,
then B given R and G), so one unknown of the sampling system is one whole pixel. Zero padding keeps the
invariant exact in floating point: positions that may not be seen enter only through exact-zero padding.

Shapes: x (B, C, H, W) in [-1, 1]; params (B, nr_mix * (1 + 2C + C(C-1)/2), H, W).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from models.dmol import dmol_nll, param_count


@dataclass(frozen=True)
class PixelCNNppConfig:
    channels: int = 1  # 1: grayscale Fashion-MNIST; 3: RGB with coupled sub-pixels
    image_size: int = 28  # H = W; divisible by 4 for the three resolutions
    nr_resnet: int = 2  # gated resnet blocks per resolution (paper: 5); 2 trains on 2 CPU cores in about an hour
    nr_filters: int = 32  # feature maps (paper: 160 for CIFAR-10, Song et al. 40 for MNIST)
    nr_mix: int = 5  # logistic mixture components (paper: 10); 5 suffices for grayscale
    dropout: float = 0.0  # Fashion-MNIST at this size underfits rather than overfits


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of x and of -x stacked on channels: keeps both signs' information (doubles channels)."""
    return F.elu(torch.cat([x, -x], dim=1))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class DownShiftedConv(nn.Conv2d):
    """Output (i, j) sees rows i-kh+1..i and columns j-(kw-1)/2..j+(kw-1)/2 (padding on top, both sides)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 3), stride: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride)
        kh, kw = kernel
        self.shift_pad = ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.shift_pad))


class DownRightShiftedConv(nn.Conv2d):
    """Output (i, j) sees rows i-kh+1..i and columns j-kw+1..j (padding on top and left)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 2), stride: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride)
        kh, kw = kernel
        self.shift_pad = (kw - 1, 0, kh - 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.shift_pad))


class DownShiftedDeconv(nn.ConvTranspose2d):
    """Stride-2 upsampling that keeps the down-shift: crop the transposed conv so nothing looks below."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 3)) -> None:
        super().__init__(cin, cout, kernel, stride=2, output_padding=1)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = super().forward(x)
        kh, kw = self.kernel
        return y[:, :, : y.shape[2] - kh + 1, (kw - 1) // 2 : y.shape[3] - (kw - 1) // 2]


class DownRightShiftedDeconv(nn.ConvTranspose2d):
    def __init__(self, cin: int, cout: int, kernel: tuple[int, int] = (2, 2)) -> None:
        super().__init__(cin, cout, kernel, stride=2, output_padding=1)
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = super().forward(x)
        kh, kw = self.kernel
        return y[:, :, : y.shape[2] - kh + 1, : y.shape[3] - kw + 1]


class GatedResnet(nn.Module):
    """x + gate(conv(concat_elu(conv(concat_elu(x)) + nin(concat_elu(a))))), with a sigmoid gate."""

    def __init__(self, filters: int, conv: Callable[[int, int], nn.Module], skip: int, dropout: float) -> None:
        super().__init__()
        self.conv_in = conv(2 * filters, filters)
        self.skip = nn.Conv2d(2 * skip * filters, filters, 1) if skip else None
        self.dropout = nn.Dropout2d(dropout)
        self.conv_out = conv(2 * filters, 2 * filters)

    def forward(self, x: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(concat_elu(x))
        if self.skip is not None and a is not None:
            h = h + self.skip(concat_elu(a))
        h = self.conv_out(self.dropout(concat_elu(h)))
        value, gate = h.chunk(2, dim=1)
        return x + value * torch.sigmoid(gate)


def blocks(stacks: nn.ModuleList, level: int) -> nn.ModuleList:
    return cast(nn.ModuleList, stacks[level])


class PixelCNNpp(nn.Module):
    def __init__(self, config: PixelCNNppConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or PixelCNNppConfig()
        f, r = cfg.nr_filters, cfg.nr_resnet
        if cfg.image_size % 4:
            raise ValueError("image_size must be divisible by 4 (three resolutions)")
        cin = cfg.channels + 1  # a constant channel of ones marks where the image (not padding) is
        self.u_init = DownShiftedConv(cin, f, (2, 3))
        self.ul_init_up = DownShiftedConv(cin, f, (1, 3))
        self.ul_init_left = DownRightShiftedConv(cin, f, (2, 1))

        def stack(conv: Callable[[int, int], nn.Module], skip: int, count: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResnet(f, conv, skip, cfg.dropout) for _ in range(count))

        self.up_u = nn.ModuleList(stack(DownShiftedConv, 0, r) for _ in range(3))
        self.up_ul = nn.ModuleList(stack(DownRightShiftedConv, 1, r) for _ in range(3))
        self.down_u = nn.ModuleList(stack(DownShiftedConv, 1, r + (i > 0)) for i in range(3))
        self.down_ul = nn.ModuleList(stack(DownRightShiftedConv, 2, r + (i > 0)) for i in range(3))
        self.downsize_u = nn.ModuleList(DownShiftedConv(f, f, (2, 3), stride=2) for _ in range(2))
        self.downsize_ul = nn.ModuleList(DownRightShiftedConv(f, f, (2, 2), stride=2) for _ in range(2))
        self.upsize_u = nn.ModuleList(DownShiftedDeconv(f, f) for _ in range(2))
        self.upsize_ul = nn.ModuleList(DownRightShiftedDeconv(f, f) for _ in range(2))
        self.out = nn.Conv2d(f, param_count(cfg.channels, cfg.nr_mix), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) in [-1, 1] -> mixture parameters (B, P, H, W) for every pixel given its past."""
        ones = torch.ones_like(x[:, :1])
        x = torch.cat([x, ones], dim=1)
        u = down_shift(self.u_init(x))
        ul = down_shift(self.ul_init_up(x)) + right_shift(self.ul_init_left(x))
        us, uls = [u], [ul]
        for level in range(3):
            for block_u, block_ul in zip(blocks(self.up_u, level), blocks(self.up_ul, level), strict=True):
                u = block_u(u)
                ul = block_ul(ul, u)
                us.append(u)
                uls.append(ul)
            if level < 2:
                u, ul = self.downsize_u[level](u), self.downsize_ul[level](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for level in range(3):
            for block_u, block_ul in zip(blocks(self.down_u, level), blocks(self.down_ul, level), strict=True):
                u = block_u(u, us.pop())
                ul = block_ul(ul, torch.cat([u, uls.pop()], dim=1))
            if level < 2:
                u, ul = self.upsize_u[level](u), self.upsize_ul[level](ul)
        return self.out(F.elu(ul))

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in nats per image, (B,), of x: (B, C, H, W) on the 256-level grid in [-1, 1]."""
        return dmol_nll(x, self(x), self.config.nr_mix)
