"""Plugin models for the tests: a tiny autoregressive model, one that peeks at its own position, one of bad shape."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from samplers.plugins import AutoregressiveModel


@dataclass(frozen=True)
class ToyConfig:
    size: int = 4  # 4 x 4 images: T = 16
    levels: int = 3
    peek: bool = False  # True: output t also reads input t (not autoregressive)
    flat: bool = False  # True: returns (B, T) instead of (B, T, levels)


class Toy(nn.Module):
    """logits[b, t, k] = tanh-mixed sum over inputs s < t (s <= t when peeking) of w[t, s, k] x[b, s]."""

    mask: torch.Tensor

    def __init__(self, config: ToyConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ToyConfig()
        t = cfg.size**2
        self.weight = nn.Parameter(torch.randn(t, t, cfg.levels) * 1.5)
        self.bias = nn.Parameter(torch.randn(t, cfg.levels))
        self.register_buffer("mask", torch.ones(t, t).tril(0 if cfg.peek else -1)[..., None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.einsum("bs,tsk->btk", torch.tanh(x - 1.0), self.weight * self.mask) + self.bias
        return logits[..., 0] if self.config.flat else logits


def spec(kind: str) -> AutoregressiveModel:
    return AutoregressiveModel(kind=kind, config=ToyConfig, build=Toy, levels=3, shape=(1, 4, 4),
                               description=f"test plugin {kind}")  # fmt: skip


TOY = spec("toy-ar")
PEEKING = spec("toy-peeking")
FLAT = spec("toy-flat")
