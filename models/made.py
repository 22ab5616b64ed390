"""MADE: Masked Autoencoder for Distribution Estimation (Germain, Gregor, Murray, Larochelle, ICML 2015,
arXiv 1502.03509), with a Bernoulli head for binarized images.

Invariant (the one the parallel samplers rely on): with the natural ordering, logit d is a function of inputs
0..d-1 only. Every hidden unit k gets a degree m_k in [0, D-2]; a unit may read inputs i <= m_k and units of
lower-or-equal degree; output d may read units with m_k < d. The masks are buffers (they move with ``.to`` and
live in the state dict), and masked weights are exact zeros, so x_{>=d} cannot touch logit d even in floating
point. Hence sampling is a lower-triangular system: x_d = 1[u_d < sigmoid(logit_d(x_{<d}))].

The forward pass pads its batch to a multiple of 8 rows (``models.invariance``) so that row i's logits are bitwise
independent of the batch it was computed in.

Direct connections (input -> output, masked strictly lower) carry the strong local correlations of neighbouring
pixels. Their weights live on a fixed-point grid (multiples of 2^-10, |w| <= 16), so for binary inputs every
partial sum is exactly representable in float32: the direct term is exact in *any* summation order, on any device.
That lets a sampler split an evaluation (lagged hidden path, direct path solved in order) and still reproduce the
ordinary forward bit for bit (``samplers.made``).

Shapes: x (B, D) float in {0, 1}; logits (B, D).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.invariance import pad_rows


@dataclass(frozen=True)
class MADEConfig:
    input_size: int = 784  # D: 28x28 binarized pixels in raster order
    hidden_sizes: tuple[int, ...] = (512, 512)  # Song et al.'s MADE: 784-512-512
    mask_seed: int = 0  # hidden-unit degrees are drawn once from this seed and then stored as buffers
    direct: bool = True  # masked input->output connections: the immediate neighbours of a pixel reach its logit
    direct_quantum: float = 2.0**-10  # direct weights are multiples of this (a power of two: exact sums)
    direct_limit: float = 16.0  # and at most this in magnitude: 784 * 16 / 2^-10 < 2^24 keeps every sum exact
    image_shape: tuple[int, int, int] = (1, 28, 28)  # how D unknowns form a picture (C, H, W)


class FrozenCache:
    """A value derived from tensors, recomputed only when one of them changes (in place, or moved).

    Serving evaluates the same masked weights thousands of times per request; without autograd they are
    computed once. The key is every source tensor's version counter and storage, so ``load_state_dict``,
    an optimizer step or ``.to(device)`` invalidates it; the cached value has exactly the bits of a fresh one.
    """

    def __init__(self) -> None:
        self.key: tuple[tuple[int, int], ...] | None = None
        self.value: torch.Tensor | None = None

    def get(self, make: Callable[[], torch.Tensor], *sources: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: the graph must reach the parameters
            return make()
        key = tuple((t._version, t.data_ptr()) for t in sources)
        if self.value is None or key != self.key:
            self.value, self.key = make(), key
        return self.value


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer): W * M, cached without autograd."""

    mask: torch.Tensor

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(torch.bool))
        self.masked = FrozenCache()

    def masked_weight(self) -> torch.Tensor:
        return self.masked.get(lambda: self.weight * self.mask, self.weight, self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


def hidden_degrees(config: MADEConfig) -> list[torch.Tensor]:
    """Degrees of every hidden layer: layer l draws from [min degree of layer l-1, D-2], as Germain et al."""
    g = torch.Generator().manual_seed(config.mask_seed)
    degrees, low = [], 0
    for size in config.hidden_sizes:
        layer = torch.randint(low, config.input_size - 1, (size,), generator=g)
        degrees.append(layer)
        low = int(layer.min())
    return degrees


class MADE(nn.Module):
    """Masked MLP D -> H1 -> ... -> D with ReLU; output d is the Bernoulli logit of pixel d given pixels < d."""

    def __init__(self, config: MADEConfig | None = None) -> None:
        super().__init__()
        self.config = config or MADEConfig()
        d = self.config.input_size
        inputs = torch.arange(d)
        hidden = hidden_degrees(self.config)
        sizes = [d, *self.config.hidden_sizes, d]
        in_degrees = [inputs, *hidden]
        out_degrees = [*hidden, None]
        layers = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            din, dout = in_degrees[i], out_degrees[i]
            mask = inputs[:, None] > din[None, :] if dout is None else dout[:, None] >= din[None, :]
            layers.append(MaskedLinear(fan_in, fan_out, mask))
        self.layers = nn.ModuleList(layers)
        self.direct = MaskedLinear(d, d, inputs[:, None] > inputs[None, :]) if self.config.direct else None
        if self.direct is not None:
            nn.init.zeros_(self.direct.weight)
            nn.init.zeros_(self.direct.bias)
        self.fixed_direct = FrozenCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D) -> logits (B, D). Row results do not depend on B (padding to a multiple of 8 rows)."""
        logits = self.hidden_logits(x)
        if self.direct is not None:
            logits = logits + (self.direct_sum(x) + self.direct.bias)
        return logits

    def hidden_logits(self, x: torch.Tensor, columns: slice = slice(None)) -> torch.Tensor:
        """The masked-MLP part of the logits (everything but the direct term): (B, D), or (B, k) for k columns."""
        h = pad_rows(x)
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))
        last = self.layers[-1]
        assert isinstance(last, MaskedLinear)
        return F.linear(h, last.masked_weight()[columns], last.bias[columns])[: x.shape[0]]

    def direct_weight(self) -> torch.Tensor:
        """(D, D) strictly lower, on the fixed-point grid (straight-through rounding while training)."""
        direct = self.direct
        assert direct is not None
        q, limit = self.config.direct_quantum, self.config.direct_limit

        def fixed_point(weight: torch.Tensor) -> torch.Tensor:
            return torch.clamp(torch.round(weight / q) * q, -limit, limit)

        if self.training:
            weight = direct.masked_weight()
            return weight + (fixed_point(weight) - weight).detach()
        return self.fixed_direct.get(lambda: fixed_point(direct.masked_weight()), direct.weight, direct.mask)

    def direct_sum(self, x: torch.Tensor, columns: slice = slice(None)) -> torch.Tensor:
        """sum_{s<d} w_ds x_s without bias: exact (order-free) for binary x. (B, D) -> (B, D) or (B, k)."""
        return F.linear(x, self.direct_weight()[columns])

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in nats per example, (B,), of binary x: (B, D)."""
        return F.binary_cross_entropy_with_logits(self(x), x, reduction="none").sum(dim=1)
