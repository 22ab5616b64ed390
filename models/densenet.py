"""DenseNet-BC classifier (Huang, Liu, van der Maaten, Weinberger, CVPR 2017, arXiv 1608.06993), written so a
dense block can be evaluated as a lower-triangular system (Song et al., ICML 2021, arXiv 2002.03629, sec. 4.2).

Inside a dense block, layer j reads the block input and the outputs of layers < j (concatenated on channels) and
adds k new channels: s_l = H_l(x0, s_1..s_{l-1}), H_l = BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k). The layers are the
unknowns. Every layer's parameters are stored stacked (layer-major), with input channels laid out at their
final positions in the block's full-width feature map, so *all* layers can be evaluated at once.

Two code paths:
- training (``model.train()``): ordinary convolutions on the channels each layer actually has; BN batch stats.
- inference: ``DenseBlock.evaluate_layers`` computes any subset of layers from a full-width feature map with
  zero-masked weights, elementwise BN and layer-batched matmuls (unfold for the 3x3). Its result for layer j is
  bitwise independent of which other layers and which other images are in the call (checked in the tests), so
  the sequential forward (one layer at a time) and a Jacobi iteration (all layers at once) compute the same map.

Shapes: images (B, 1, 28, 28) in [-1, 1]; logits (B, classes); block features (B, C0 + L*k, H, W).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from models.invariance import pad_rows


@dataclass(frozen=True)
class DenseNetConfig:
    in_channels: int = 1
    num_classes: int = 10
    growth: int = 12  # k: channels each layer adds
    block_layers: tuple[int, ...] = (6, 6, 6)  # layers per dense block at 28, 14, 7 px: DenseNet-BC-40
    bottleneck: int = 4  # the 1x1 conv widens to bottleneck * k channels (the "B" of DenseNet-BC)
    compression: float = 0.5  # transitions keep this fraction of channels (the "C" of DenseNet-BC)
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1


@dataclass(frozen=True)
class Unit:
    """One link of the textbook forward (``DenseNet.units``)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    cost: float  # multiply-adds per 28 x 28 image
    state: tuple[tuple[str, int | None], ...]  # the state_dict entries it owns: (key, index on dim 0 or None: all)


class DenseBlock(nn.Module):
    """L layers with stacked parameters. Input (B, C0, H, W) -> output (B, C0 + L*k, H, W)."""

    bn1_mean: torch.Tensor  # buffers, (L, C) and (L, 4k): running statistics of each layer's two BNs
    bn1_var: torch.Tensor
    bn2_mean: torch.Tensor
    bn2_var: torch.Tensor
    visible: torch.Tensor  # (L, C) bool

    def __init__(self, in_channels: int, layers: int, growth: int, bottleneck: int, eps: float, momentum: float):
        super().__init__()
        self.c0, self.layers, self.k, self.wide = in_channels, layers, growth, bottleneck * growth
        self.width = in_channels + layers * growth
        self.eps, self.momentum = eps, momentum
        c, w = self.width, self.wide
        self.bn1_weight = nn.Parameter(torch.ones(layers, c))
        self.bn1_bias = nn.Parameter(torch.zeros(layers, c))
        self.conv1 = nn.Parameter(torch.empty(layers, w, c))
        self.bn2_weight = nn.Parameter(torch.ones(layers, w))
        self.bn2_bias = nn.Parameter(torch.zeros(layers, w))
        self.conv2 = nn.Parameter(torch.empty(layers, growth, w, 3, 3))
        self.register_buffer("bn1_mean", torch.zeros(layers, c))
        self.register_buffer("bn1_var", torch.ones(layers, c))
        self.register_buffer("bn2_mean", torch.zeros(layers, w))
        self.register_buffer("bn2_var", torch.ones(layers, w))
        # visible[j, c]: layer j may read channel c of the full-width feature map (block input and layers < j).
        visible = torch.arange(c)[None, :] < (in_channels + torch.arange(layers) * growth)[:, None]
        self.register_buffer("visible", visible)
        for j in range(layers):
            fan_in = self.inputs_of(j)
            nn.init.normal_(self.conv1[j, :, :fan_in], std=math.sqrt(2.0 / fan_in))
            nn.init.zeros_(self.conv1[j, :, fan_in:])
            nn.init.normal_(self.conv2[j], std=math.sqrt(2.0 / (w * 9)))

    def inputs_of(self, layer: int) -> int:
        return self.c0 + layer * self.k

    def channels_of(self, layer: int) -> slice:
        start = self.c0 + layer * self.k
        return slice(start, start + self.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.concat_forward(x)
        # One layer at a time on the full-width map (unknown channels zero): the sequential forward.
        features = torch.cat([x, x.new_zeros(x.shape[0], self.width - self.c0, *x.shape[2:])], dim=1)
        for j in range(self.layers):
            part = self.channels_of(j)
            out = self.evaluate_layers(features, j, j + 1)[:, 0]
            features = torch.cat([features[:, : part.start], out, features[:, part.stop :]], dim=1)
        return features

    def concat_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The textbook DenseNet forward: layer j convolves only the C0 + j*k channels that exist so far.

        Training uses it (batch statistics); in eval mode it is the fastest sequential forward, equal to
        ``forward`` to float32 rounding only (narrower GEMMs round differently), so benchmarks compare against
        it and exactness is checked against ``forward``.
        """
        for j in range(self.layers):
            x = self.grow(j, x)
        return x

    def grow(self, j: int, inp: torch.Tensor) -> torch.Tensor:
        """Layer j of the textbook forward: (B, C0 + j*k, H, W) -> (B, C0 + (j+1)*k, H, W), its k channels appended.
        One unit of ``DenseNet.units`` (a pipeline may cut the block between two layers)."""
        c = inp.shape[1]
        h = F.batch_norm(
            inp, self.bn1_mean[j, :c], self.bn1_var[j, :c], self.bn1_weight[j, :c], self.bn1_bias[j, :c],
            self.training, self.momentum, self.eps,
        )  # fmt: skip
        h = F.conv2d(F.relu(h), self.conv1[j, :, :c, None, None])
        h = F.batch_norm(
            h, self.bn2_mean[j], self.bn2_var[j], self.bn2_weight[j], self.bn2_bias[j],
            self.training, self.momentum, self.eps,
        )  # fmt: skip
        return torch.cat([inp, F.conv2d(F.relu(h), self.conv2[j], padding=1)], dim=1)

    def folded_bn(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eval-mode BN as per-channel scale and shift: (L, C) x2 for BN1 (zero where invisible), (L, 4k) x2."""
        scale1 = self.bn1_weight / torch.sqrt(self.bn1_var + self.eps)
        shift1 = self.bn1_bias - self.bn1_mean * scale1
        scale2 = self.bn2_weight / torch.sqrt(self.bn2_var + self.eps)
        shift2 = self.bn2_bias - self.bn2_mean * scale2
        return scale1 * self.visible, shift1 * self.visible, scale2, shift2

    def evaluate_layers(self, features: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """Outputs of layers first..last-1 from a full-width feature map: (B, C, H, W) -> (B, n, k, H, W).

        Channels a layer may not read are multiplied by exact zeros, so layer l's output depends only on the
        block input and layers < l. Layer-batched matmuls: a layer's result does not depend on the others.
        """
        b, c, h, w = features.shape
        n = last - first
        scale1, shift1, scale2, shift2 = (t[first:last] for t in self.folded_bn())
        z = F.relu(features[:, None] * scale1[None, :, :, None, None] + shift1[None, :, :, None, None])
        weight1 = self.conv1[first:last] * self.visible[first:last, None, :]
        z = torch.matmul(weight1[None], z.reshape(b, n, c, h * w))  # (B, n, 4k, HW)
        z = F.relu(z * scale2[None, :, :, None] + shift2[None, :, :, None])
        cols = F.unfold(z.reshape(b * n, self.wide, h, w), 3, padding=1).reshape(b, n, self.wide * 9, h * w)
        out = torch.matmul(self.conv2[first:last].reshape(1, n, self.k, self.wide * 9), cols)
        return out.reshape(b, n, self.k, h, w)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int, eps: float, momentum: float) -> None:
        super().__init__(
            nn.BatchNorm2d(cin, eps=eps, momentum=momentum),
            nn.ReLU(),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.AvgPool2d(2),
        )


class DenseNet(nn.Module):
    """stem conv3x3 -> [dense block -> transition] x (n-1) -> dense block -> BN-ReLU-pool -> linear."""

    def __init__(self, config: DenseNetConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or DenseNetConfig()
        channels = 2 * cfg.growth
        self.stem = nn.Conv2d(cfg.in_channels, channels, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for i, layers in enumerate(cfg.block_layers):
            block = DenseBlock(channels, layers, cfg.growth, cfg.bottleneck, cfg.bn_eps, cfg.bn_momentum)
            self.blocks.append(block)
            channels = block.width
            if i < len(cfg.block_layers) - 1:
                out = math.floor(channels * cfg.compression)
                self.transitions.append(Transition(channels, out, cfg.bn_eps, cfg.bn_momentum))
                channels = out
        self.head_bn = nn.BatchNorm2d(channels, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.classifier = nn.Linear(channels, cfg.num_classes)

    def stages(self) -> list[tuple[DenseBlock, nn.Module | None]]:
        """(block, transition after it or None) in order: how a solver-driven forward walks the network."""
        after: list[nn.Module | None] = [*self.transitions, None]
        blocks = [block for block in self.blocks if isinstance(block, DenseBlock)]
        return list(zip(blocks, after, strict=True))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.head_bn(features)).mean(dim=(2, 3))
        if self.training:
            return self.classifier(pooled)
        # A GEMM with 10 outputs rounds differently by row position; a product and a sum do not.
        return (pooled[:, None, :] * self.classifier.weight[None]).sum(dim=-1) + self.classifier.bias

    def concat_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits by the textbook forward (``DenseBlock.concat_forward``): the fastest sequential baseline."""
        return self.run_units(x, 0, None)

    def run_units(self, x: torch.Tensor, first: int, last: int | None) -> torch.Tensor:
        """``units()[first:last]`` applied to x in order."""
        for unit in self.units()[first:last]:
            x = unit.fn(x)
        return x

    def units(self) -> list[Unit]:
        """The textbook forward as a chain of units: the stem, every dense layer, every transition, the head.
        Training runs them in order; decoupled training (``models.ddg``) cuts the chain into modules of about
        equal cost."""
        cfg = self.config
        side, channels = 28, 2 * cfg.growth
        keys = list(self.state_dict())

        def whole(prefix: str) -> tuple[tuple[str, int | None], ...]:
            return tuple((key, None) for key in keys if key.startswith(prefix))

        chain = [Unit("stem", self.stem, side * side * cfg.in_channels * channels * 9.0, whole("stem."))]
        for i, (block, transition) in enumerate(self.stages()):
            names = [key for key in keys if key.startswith(f"blocks.{i}.") and key != f"blocks.{i}.visible"]
            for j in range(block.layers):
                cost = side * side * (block.inputs_of(j) * block.wide + block.wide * block.k * 9.0)
                chain.append(Unit(f"block{i}.layer{j}", partial(block.grow, j), cost, tuple((n, j) for n in names)))
            if transition is not None:
                cost = side * side * block.width * block.width * cfg.compression
                chain.append(Unit(f"transition{i}", transition, cost, whole(f"transitions.{i}.")))
                side //= 2
        head_cost = float(self.classifier.in_features * (side * side + cfg.num_classes))
        chain.append(Unit("head", self.head, head_cost, whole("head_bn.") + whole("classifier.")))
        return chain

    def forward(self, x: torch.Tensor, units: tuple[int, int] | None = None) -> torch.Tensor:
        """x: (B, C, H, W) -> logits (B, classes). In eval mode rows are batch invariant (padding to 8 rows).

        units: (first, last) runs only ``units()[first:last]`` on x (a module of decoupled training)."""
        if units is not None:
            return self.run_units(x, *units)
        if self.training:
            return self.concat_forward(x)
        n = x.shape[0]
        h = self.stem(pad_rows(x))
        for block, transition in self.stages():
            h = block(h)
            if transition is not None:
                h = transition(h)
        return self.head(h)[:n]
