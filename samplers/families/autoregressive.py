"""The family of plugin models: any autoregressive network with categorical outputs, sampled as a triangular system.

A plugin (``samplers.plugins.AutoregressiveModel``) gives a module whose ``forward(x)`` maps x: (B, T) values
0 .. K-1 to logits (B, T, K), output t depending on inputs < t only (checked when it is loaded). With uniforms
u: (T, K) fixed per sample before solving, position t is the Gumbel-max draw
    x_t = argmax_k (logit_tk(x_{<t}) - log(-log u_tk)),
which is exactly what the ordinary sampler draws at step t (Gumbel-max samples the softmax; Maddison et al.
2014), so sampling is a lower-triangular system and every method of ``solvers`` reaches the sequential sample
(Song et al., ICML 2021, arXiv 2002.03629). One Jacobi evaluation is one forward pass of the whole sequence.

Exactness: rows are padded to a multiple of 8 (``models.invariance``) so a row's logits do not depend on its batch
on the CPU kernels measured there; ``verify`` checks equality with the sequential sampler bit for bit.

Shapes: x (N, T) long; noise (N, T, K); decoded samples (N, C, H, W) = x.reshape(N, *shape).
"""

from __future__ import annotations

from typing import Any

import torch

from models.invariance import pad_rows
from models.registry import Entry
from samplers.noise import uniforms
from samplers.plugins import AutoregressiveModel, check_autoregressive
from samplers.sampling import PLAIN, SamplerFamily, sampling_offer
from samplers.system import StatelessSystem


class AutoregressiveFamily(SamplerFamily):
    """The family of one plugin model kind."""

    def __init__(self, spec: AutoregressiveModel) -> None:
        self.spec = spec
        self.name = spec.kind
        self.offers = sampling_offer(PLAIN, auto_key=spec.kind)

    def describe(self, entry: Entry) -> tuple[list[int], int]:
        return list(self.spec.shape), self.spec.length

    def system(self, model: torch.nn.Module, name: str) -> CategoricalSystem:
        check_autoregressive(model, self.spec, name)  # refuse a model that would not be exact, before serving it
        return CategoricalSystem(model, name, self.spec)


class CategoricalSystem(StatelessSystem):
    unknown_shape: tuple[int, ...] = ()
    dtype = torch.long
    methods: tuple[str, ...] = PLAIN

    def __init__(self, model: torch.nn.Module, name: str, spec: AutoregressiveModel) -> None:
        self.model, self.name, self.spec = model, name, spec
        self.unknowns, self.levels = spec.length, spec.levels
        self.image_shape = spec.shape
        self.block_size = spec.shape[2]  # one image row
        self.device = next(model.parameters()).device

    def draw_noise(self, seed: int, indices: list[int] | range) -> torch.Tensor:
        return uniforms(self.name, seed, indices, (self.unknowns, self.levels)).to(self.device)

    def initial_guess(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.zeros(noise.shape[0], self.unknowns, dtype=torch.long, device=noise.device)

    def evaluate(self, x: torch.Tensor, noise: torch.Tensor, cache: Any = None, slots: torch.Tensor | None = None,
                 span: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        logits = self.model(pad_rows(x.to(torch.float32)))[: x.shape[0]]
        return torch.argmax(logits - torch.log(-torch.log(noise)), dim=-1)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.image_shape)
