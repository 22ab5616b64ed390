"""MADE in degree order: every hidden unit computed once, as soon as its inputs exist (the work-optimal sequential
sampler of Germain et al.'s MADE, arXiv 1502.03509; the baseline issue 14 of this project asks every parallel
sampler to beat).

A hidden unit of degree m reads inputs x_{<=m} (layer 1) or units of degree <= m of the layer below, and logit d
reads last-layer units of degree < d and (direct connections) x_{<d}. So once x_0..x_m are known, every unit of
degree m can be computed, and then logit m+1: sampling is D small steps whose total arithmetic is about one
forward pass (the masked forward computes every unit D times over in the naive sequential sampler).

Layout (what makes each step a few contiguous GEMMs):
- units of every hidden layer are sorted by degree, so "the units of degree m" and "the units of degree <= m"
  are a slice and a prefix;
- x and the last hidden layer share one buffer ``z``, interleaved by degree (x_d, then the last-layer units of
  degree d), so everything logit d reads is the prefix of z before x_d, and everything a first-layer unit of
  degree m reads is the prefix up to x_m;
- buffers are (features, batch), so a group of units is a contiguous block of rows, written in place.

Exactness: the sums run in another order than the reference forward's (``models.made.MADE.forward``), so a
logit may differ in its last bits and, rarely, a sample with it. The result is a *candidate*: the sampling
family certifies it with one evaluation of the reference map and repairs what fails (``samplers.certify``).

Shapes: noise (B, D) uniforms; samples (B, D) float32 of 0/1.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import torch

from models.made import MADE, MaskedLinear, hidden_degrees

POOLED_SIZES = 8  # batch sizes whose buffers (and prebuilt views) are kept between samplings


@dataclass(frozen=True)
class Group:
    """The units of one hidden layer with one degree: out = relu(weight @ source + bias), in place."""

    weight: torch.Tensor  # (k, n): their weights over the prefix they read
    bias: torch.Tensor  # (k, 1)
    layer: int  # 0 .. L-1
    source: int  # prefix length read: of z (layer 0) or of the layer below's buffer
    target: int  # first row written: in z (last layer) or in the layer's own buffer


class DegreeOrder:
    """A MADE's weights reordered for evaluation in degree order. Built once per model (weights frozen)."""

    def __init__(self, model: MADE) -> None:
        config = model.config
        layers = list(model.layers)
        assert all(isinstance(layer, MaskedLinear) for layer in layers)
        d = self.inputs = config.input_size
        degrees = hidden_degrees(config)
        order = [torch.argsort(m, stable=True) for m in degrees]
        sorted_degrees = [m[p] for m, p in zip(degrees, order, strict=True)]
        self.hidden = [int(m.numel()) for m in degrees]
        # bounds[l][m] = number of units of layer l with degree < m
        self.bounds = [torch.searchsorted(m, torch.arange(d + 1)).tolist() for m in sorted_degrees]
        last = len(degrees) - 1
        # z: for each degree m, x_m then the last layer's units of degree m
        slot_x, slot_h, i = [], torch.empty(self.hidden[last], dtype=torch.long), 0
        for m in range(d):
            slot_x.append(i)
            count = self.bounds[last][m + 1] - self.bounds[last][m]
            slot_h[self.bounds[last][m] : self.bounds[last][m + 1]] = torch.arange(i + 1, i + 1 + count)
            i += 1 + count
        self.width, self.slot_x = i, slot_x
        self.x_index = torch.tensor(slot_x)
        weights = [layer.masked_weight().detach() for layer in layers]  # type: ignore[operator]
        biases = [layer.bias.detach() for layer in layers]  # type: ignore[operator]
        device = self.device = weights[0].device
        order = [p.to(device) for p in order]
        self.x_index, slot_h = self.x_index.to(device), slot_h.to(device)
        first = self.sorted_first = weights[0][order[0]]  # (H0, D), units by degree
        self.first = torch.zeros(self.hidden[0], self.width, device=device)
        self.first[:, self.x_index] = first
        self.between = [weights[k][order[k]][:, order[k - 1]] for k in range(1, last + 1)]
        self.biases = [biases[k][order[k]] for k in range(last + 1)]
        out = torch.zeros(d, self.width, device=device)
        self.sorted_out = weights[last + 1][:, order[last]]  # (D, H_L), units by degree
        out[:, slot_h] = self.sorted_out
        bias = biases[last + 1].clone()
        self.direct = torch.zeros(d, d, device=device)
        if model.direct is not None:
            self.direct = model.direct_weight().detach()
            out[:, self.x_index] = self.direct
            bias = bias + model.direct.bias.detach()  # the reference adds (direct + bias) to the hidden logits
        self.out, self.out_bias = out, bias
        self.groups = self._groups()
        self.logits = [(self.out[t : t + 1, : max(slot_x[t], 1)].contiguous(), self.out_bias[t : t + 1, None])
                       for t in range(d)]  # fmt: skip
        self.pool: dict[int, list[Buffers]] = {}

    def _groups(self) -> list[list[Group]]:
        """groups[m]: the unit groups of degree m, layer by layer."""
        last = len(self.hidden) - 1
        out: list[list[Group]] = []
        for m in range(self.inputs):
            step = []
            for layer in range(last + 1):
                lo, hi = self.bounds[layer][m], self.bounds[layer][m + 1]
                if hi == lo:
                    continue
                if layer == 0:
                    source, weight = self.slot_x[m] + 1, self.first[lo:hi, : self.slot_x[m] + 1]
                else:
                    source = self.bounds[layer - 1][m + 1]
                    weight = self.between[layer - 1][lo:hi, :source]
                target = self.slot_x[m] + 1 + lo - self.bounds[last][m] if layer == last else lo
                step.append(Group(weight.contiguous(), self.biases[layer][lo:hi, None].contiguous(), layer, source,
                                  target))  # fmt: skip
            out.append(step)
        return out

    def macs(self) -> int:
        """Multiply-adds of one sample by ``sample``: what its GEMMs compute (their zero weights included)."""
        units = sum(g.weight.numel() for step in self.groups for g in step)
        return units + sum(w.numel() for w, _ in self.logits)

    def buffers(self, batch: int) -> Buffers:
        """Buffers for ``batch`` rows, with every step's views made once (a pool per batch size: a buffer serves
        one sampling at a time, and interleaved samplings each hold their own)."""
        if batch not in self.pool and len(self.pool) >= POOLED_SIZES:
            del self.pool[next(iter(self.pool))]  # the batch size pooled longest ago
        free = self.pool.setdefault(batch, [])
        return free.pop() if free else Buffers(self, batch)

    def sample(self, noise: torch.Tensor, piece: int = 56) -> Generator[None, None, tuple[torch.Tensor, torch.Tensor]]:
        """The sequential sample of ``noise`` (B, D), yielding every ``piece`` steps; returns it, (B, D) float32,
        and the logits it was drawn with, (B, D)."""
        buffers = self.buffers(noise.shape[0])
        try:
            buffers.z.zero_()
            for below in buffers.below:
                below.zero_()
            buffers.u.copy_(noise.T)
            for t, (units, (bias, weight, source, logit), u, x) in enumerate(buffers.steps):
                for b, w, src, out in units:
                    torch.addmm(b, w, src, out=out)
                    out.relu_()
                torch.lt(u, torch.sigmoid(torch.addmm(bias, weight, source, out=logit)), out=x)
                if t % piece == piece - 1:
                    yield
            return buffers.z[self.x_index].T.contiguous(), buffers.logits.T.contiguous()
        finally:
            self.pool.setdefault(noise.shape[0], []).append(buffers)


Step = tuple[list[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]


class Buffers:
    """One sampling's state for ``batch`` rows: z, the lower hidden layers, the noise, and every step's views."""

    def __init__(self, order: DegreeOrder, batch: int) -> None:
        device = order.device
        self.z = torch.zeros(order.width, batch, device=device)
        self.below = [torch.zeros(h, batch, device=device) for h in order.hidden[:-1]]
        self.u = torch.zeros(order.inputs, batch, device=device)
        self.logits = torch.zeros(order.inputs, batch, device=device)
        last = len(order.hidden) - 1
        self.steps: list[Step] = []
        for t in range(order.inputs):
            units: list[tuple[torch.Tensor, ...]] = []
            for g in order.groups[t - 1] if t > 0 else []:
                source = self.z[: g.source] if g.layer == 0 else self.below[g.layer - 1][: g.source]
                buffer = self.z if g.layer == last else self.below[g.layer]
                units.append((g.bias, g.weight, source, buffer[g.target : g.target + g.weight.shape[0]]))
            weight, bias = order.logits[t]
            slot = order.slot_x[t]
            logit: tuple[torch.Tensor, ...] = (bias, weight, self.z[: weight.shape[1]], self.logits[t : t + 1])
            self.steps.append((units, logit, self.u[t], self.z[slot : slot + 1]))
