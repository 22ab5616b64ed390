"""A small causal transformer over Fashion-MNIST pixels: the worked example of serving your own model with parafeed.

Images are downsampled to 14 x 14 (2 x 2 means) and quantized to 16 gray levels, read in raster order as a
sequence of T = 196 values. The network is a decoder-only transformer (Vaswani et al. 2017, arXiv 1706.03762;
GPT-style pre-norm blocks): position t reads the values before it (the sequence shifted right by one, a learned
start vector at t = 0) under a causal attention mask, and predicts the 16-way distribution of value t.

The parafeed contract (``samplers.plugins``): ``forward(x)`` takes x: (B, T) float32 values 0..15 and returns
logits (B, T, 16), output t depending on x_{<t} only. Values enter through a smooth one-hot (a Gaussian bump per
level), so the input path is differentiable and parafeed's gradient probe sees every dependency.

Shapes: x (B, T); hidden (B, T, width); logits (B, T, levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PixelTransformerConfig:
    size: int = 14  # images are size x size: T = size ** 2 positions
    levels: int = 16  # gray levels per pixel (8-bit value // 16)
    width: int = 64  # model width
    heads: int = 4  # attention heads (width must divide by them)
    layers: int = 2  # transformer blocks
    sharpness: float = 4.0  # of the smooth one-hot: exp(-sharpness * (x - k)^2) for level k


class Block(nn.Module):
    """Pre-norm causal self-attention and MLP, each added to the residual stream."""

    def __init__(self, cfg: PixelTransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1, self.norm2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, 4 * cfg.width), nn.GELU(), nn.Linear(4 * cfg.width, cfg.width))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        q, k, v = self.qkv(self.norm1(h)).split(w, dim=2)
        q, k, v = (z.view(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(w // self.heads)
        attention = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)  # exact zeros for the future
        h = h + self.proj((attention @ v).transpose(1, 2).reshape(b, t, w))
        return h + self.mlp(self.norm2(h))


class PixelTransformer(nn.Module):
    mask: torch.Tensor

    def __init__(self, config: PixelTransformerConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or PixelTransformerConfig()
        length = cfg.size**2
        self.embed = nn.Linear(cfg.levels, cfg.width)
        self.start = nn.Parameter(torch.zeros(cfg.width))
        self.position = nn.Parameter(torch.randn(length, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.levels)
        self.register_buffer("mask", torch.ones(length, length, dtype=torch.bool).triu(1), persistent=False)
        self.register_buffer("grid", torch.arange(cfg.levels, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T) values 0..levels-1 (float) -> logits (B, T, levels); output t sees x_{<t} only."""
        bumps = torch.exp(-self.config.sharpness * (x[..., None] - self.grid) ** 2)  # smooth one-hot
        values = self.embed(bumps)
        start = self.start.expand(x.shape[0], 1, -1)
        h = torch.cat([start, values[:, :-1]], dim=1) + self.position  # shift right: position t reads x_{<t}
        for block in self.blocks:
            h = block(h, self.mask)
        return self.head(self.norm(h))

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in nats per image, (B,), of x: (B, T) integer levels."""
        logits = self(x.float())
        return F.cross_entropy(logits.transpose(1, 2), x.long(), reduction="none").sum(dim=1)


def images_to_levels(images: torch.Tensor, config: PixelTransformerConfig) -> torch.Tensor:
    """uint8 (N, 28, 28) -> (N, T) long levels: 2 x 2 means of 28 x 28, then value // (256 / levels)."""
    means = F.adaptive_avg_pool2d(images[:, None].float(), config.size)[:, 0]
    return torch.clamp((means / (256 / config.levels)).floor(), max=config.levels - 1).long().flatten(1)
