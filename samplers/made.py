"""MADE sampling as a lower-triangular system of binary unknowns (Song et al., ICML 2021, arXiv 2002.03629).

Unknown d is pixel d (raster order). With fixed uniforms u (one per pixel, drawn before solving),
    x_d = 1[u_d < sigmoid(logit_d(x_{<d}))],
which is exactly what the ordinary sampler draws at step d. One Jacobi evaluation is one forward pass of the
masked network (all 784 conditionals at once); the sequential sampler needs 784 passes.

Exactness: logit_d reads x_{<d} only through exact-zero masked weights, and the MADE forward is batch invariant
(``models.invariance``), so every method reaches bit for bit the sequential sample.
Shapes: x (N, D) float32 of 0/1; noise (N, D).
"""

from __future__ import annotations

import torch

from models.made import MADE
from samplers.noise import uniforms


class MadeSystem:
    unknown_shape: tuple[int, ...] = ()
    dtype = torch.float32

    def __init__(self, model: MADE, name: str) -> None:
        self.model, self.name = model, name
        self.unknowns = model.config.input_size
        self.image_shape = model.config.image_shape
        self.block_size = self.image_shape[2]
        self.device = next(model.parameters()).device

    def draw_noise(self, seed: int, indices: list[int] | range) -> torch.Tensor:
        return uniforms(self.name, seed, indices, (self.unknowns,)).to(self.device)

    def initial_guess(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.zeros(noise.shape[0], self.unknowns, device=noise.device)

    def evaluate(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (noise < torch.sigmoid(self.model(x))).to(x.dtype)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.image_shape).to(torch.long)
