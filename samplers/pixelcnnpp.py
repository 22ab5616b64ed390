"""PixelCNN++ sampling as a lower-triangular system of pixels (Song et al., ICML 2021, arXiv 2002.03629).

Unknown t is pixel t in raster order, a vector of C integer levels 0..255 (its sub-pixels are coupled inside
the head, so one pixel is one unknown). With fixed uniforms per pixel, drawn before solving (mixture choice by
Gumbel-max, value by the logistic inverse CDF, rounded to its 8-bit bin), pixel t is a deterministic function of
the pixels before it, and convergence is an exact integer test.

Shapes: x (N, H*W, C) long levels; noise (N, nr_mix + C, H, W) uniforms (mixture choice first, then values).
"""

from __future__ import annotations

import torch

from models.dmol import dmol_sample, from_levels
from models.pixelcnnpp import PixelCNNpp
from samplers.noise import uniforms


class PixelCNNppSystem:
    dtype = torch.long

    def __init__(self, model: PixelCNNpp, name: str) -> None:
        self.model, self.name = model, name
        cfg = model.config
        self.channels, self.size, self.nr_mix = cfg.channels, cfg.image_size, cfg.nr_mix
        self.unknowns = cfg.image_size**2
        self.unknown_shape: tuple[int, ...] = (cfg.channels,)
        self.image_shape = (cfg.channels, cfg.image_size, cfg.image_size)
        self.block_size = cfg.image_size
        self.device = next(model.parameters()).device

    def draw_noise(self, seed: int, indices: list[int] | range) -> torch.Tensor:
        shape = (self.nr_mix + self.channels, self.size, self.size)
        return uniforms(self.name, seed, indices, shape).to(self.device)

    def initial_guess(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.zeros(noise.shape[0], self.unknowns, self.channels, dtype=torch.long, device=noise.device)

    def to_images(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, C) levels -> (N, C, H, W) in [-1, 1]."""
        return from_levels(x.transpose(1, 2).reshape(x.shape[0], self.channels, self.size, self.size))

    def evaluate(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        params = self.model(self.to_images(x))
        levels = dmol_sample(params, noise[:, : self.nr_mix], noise[:, self.nr_mix :], self.nr_mix)
        return levels.flatten(2).transpose(1, 2)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], *self.image_shape)
