"""The DenseNet family: inference as one lower-triangular system over the whole network (Song et al., ICML 2021,
sec. 4.2).

Unknowns, in order: the stem output, every layer of dense block 1, transition 1, the layers of block 2, ...,
and last the logits. Each depends only on earlier ones: a dense layer on its block input and the layers before
it, a transition on its block, the logits on the last block. One Jacobi iteration evaluates every unknown from the
current iterate at once: each block's layers in one layer-batched call (``DenseBlock.evaluate_layers``), the
transitions, the stem and the head. So the network's depth becomes the number of iterations: exact (``tol=0``)
after at most U = 1 + sum(L_b) + (blocks - 1) + 1 iterations, usually fewer; the predicted class typically settles
earlier than the logits.

Exactness: a layer's output depends on later channels only through exact-zero weights, and the layer-batched
kernels give a layer the same bits whichever layers or images share the call, so the certified fixed point is
bit for bit ``DenseNet.forward`` in eval mode (the sequential forward). Subsets of rows are padded to a multiple
of 8 (``models.invariance``) for the stem, transitions and head.

Shapes: images (B, C, 28, 28); iterate (B, U, D) with each unknown flattened into the first numel of its row.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from models.densenet import DenseBlock, DenseNet
from models.invariance import pad_rows
from models.registry import Entry
from samplers import inference
from samplers.family import Cost, Family, Limits, ModelInfo, Offer
from samplers.inference import Forward, rows_in_pieces
from samplers.inputs import image_array
from samplers.work import PIECE_ROWS, SliceWork
from solvers import FixedPointBatch, drain, solving

if TYPE_CHECKING:
    from samplers.engine import Engine


@dataclass(frozen=True)
class Unknown:
    name: str
    shape: tuple[int, ...]  # (C, H, W) or (classes,)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class DenseSystem:
    def __init__(self, model: DenseNet, image_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        self.model = model
        self.unknowns: list[Unknown] = []
        device = next(model.parameters()).device
        with torch.no_grad():  # shapes by one probe through the network, on the model's device
            h = model.stem(torch.zeros(1, *image_shape, device=device))
            self.unknowns.append(Unknown("stem", tuple(h.shape[1:])))
            self.block_index: list[tuple[int, int]] = []  # (index of block input, index of first layer)
            for b, (block, transition) in enumerate(model.stages()):
                self.block_index.append((len(self.unknowns) - 1, len(self.unknowns)))
                size = tuple(h.shape[2:])
                self.unknowns += [Unknown(f"block{b + 1}.layer{j + 1}", (block.k, *size)) for j in range(block.layers)]
                h = torch.zeros(1, block.width, *size, device=device)
                if transition is not None:
                    h = transition(h)
                    self.unknowns.append(Unknown(f"transition{b + 1}", tuple(h.shape[1:])))
            self.unknowns.append(Unknown("logits", (model.config.num_classes,)))
        self.width = max(u.size for u in self.unknowns)

    @property
    def length(self) -> int:
        return len(self.unknowns)

    def get(self, x: torch.Tensor, index: int) -> torch.Tensor:
        u = self.unknowns[index]
        return x[:, index, : u.size].reshape(x.shape[0], *u.shape)

    def features(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """Block input and all its layers from the iterate, concatenated: (B, C0 + L*k, H, W)."""
        source, first = self.block_index[block]
        dense = self.model.blocks[block]
        assert isinstance(dense, DenseBlock)
        layers = [self.get(x, first + j) for j in range(dense.layers)]
        return torch.cat([self.get(x, source), *layers], dim=1)

    def evaluate(self, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """One Jacobi step: every unknown from the iterate. x (N, U, D) -> (N, U, D)."""
        n = x.shape[0]
        x = pad_rows(x)
        images = pad_rows(images)
        y = torch.zeros_like(x)

        def put(index: int, value: torch.Tensor) -> None:
            y[:, index, : self.unknowns[index].size] = value.reshape(value.shape[0], -1)

        put(0, self.model.stem(images))
        for b, (block, transition) in enumerate(self.model.stages()):
            features = self.features(x, b)
            first = self.block_index[b][1]
            outputs = block.evaluate_layers(features, 0, block.layers)  # (N, L, k, H, W)
            for j in range(block.layers):
                put(first + j, outputs[:, j])
            nxt = first + block.layers
            put(nxt, transition(features) if transition is not None else self.model.head(features))
        return y[:n]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.get(x, self.length - 1)


@dataclass(frozen=True)
class DenseSolve:
    logits: torch.Tensor  # (B, classes)
    iterations: torch.Tensor  # (B,)
    converged: torch.Tensor  # (B,)
    evaluations: int
    residual: float  # max |step(x) - x| over the returned iterate (0 when certified with tol=0)


def dense_solve(
    system: DenseSystem, images: torch.Tensor, method: str = "jacobi", tol: float = 0.0,
    max_iterations: int | None = None, callback: Callable[[FixedPointBatch], None] | None = None,
) -> DenseSolve:  # fmt: skip
    """Solve the network for a batch of images with ``solvers.solve`` (per-image stopping)."""
    with torch.no_grad():
        return drain(dense_pieces(system, images, method, tol, max_iterations), callback)


def dense_pieces(
    system: DenseSystem, images: torch.Tensor, method: str = "jacobi", tol: float = 0.0,
    max_iterations: int | None = None, rows_per_call: int | None = None,
) -> Generator[Any, None, DenseSolve]:  # fmt: skip
    """``dense_solve`` piece by piece (``solvers.solving``), ``rows_per_call`` images per network evaluation."""

    def step(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return system.evaluate(x, images[rows])

    x0 = images.new_zeros(images.shape[0], system.length, system.width)
    result = yield from solving(step, x0, method, max_iterations, tol=tol, rows_per_call=rows_per_call)
    certified = result.all_converged and tol == 0.0
    residual = inference.residual(certified, lambda: system.evaluate(result.x, images), result.x)
    return DenseSolve(system.logits(result.x), result.iterations, result.converged, result.evaluations, residual)


class DenseNetFamily(Family):
    """DenseNet-BC classifiers: POST /infer by the ordinary forward or as one triangular system."""

    name, kind = "densenet", "classifier"
    offers = {"infer": Offer(("sequential", "jacobi"), auto_key="densenet-infer", fallback="sequential")}  # noqa: RUF012

    def describe(self, entry: Entry) -> tuple[list[int], int]:
        layers = list(entry.config.get("block_layers", [6, 6, 6]))
        unknowns = 1 + sum(layers) + (len(layers) - 1) + 1  # stem, dense layers, transitions, logits
        return [int(entry.config.get("in_channels", 1)), 28, 28], unknowns

    def system(self, model: torch.nn.Module, name: str) -> DenseSystem:
        assert isinstance(model, DenseNet)
        return DenseSystem(model)

    def cost(self, task: str, request: Any, entry: Entry, method: str) -> Cost:
        """Per image: one forward's arithmetic (the convolutions), times the unknowns for Jacobi's worst case; the
        iterate holds every unknown of every image (padded to the largest); verify adds one forward."""
        cfg = entry.config
        k, layers = int(cfg.get("growth", 12)), list(cfg.get("block_layers", [6, 6, 6]))
        wide, channels, size = int(cfg.get("bottleneck", 4)) * k, 2 * k, 28
        flops, largest = 2.0 * 9 * channels * size**2, channels * size**2  # the stem
        for i, count in enumerate(layers):
            width = channels + count * k
            flops += 2.0 * count * size**2 * (width * wide + 9 * wide * k)  # layer-batched: every layer sees the width
            largest = max(largest, k * size**2)
            if i < len(layers) - 1:
                channels = math.floor(width * float(cfg.get("compression", 0.5)))
                flops += 2.0 * width * channels * size**2
                size //= 2
                largest = max(largest, channels * size**2)
        images = len(request.inputs) if request.inputs is not None else request.batch
        unknowns = self.describe(entry)[1]
        solve = images * flops * (1 if method == "sequential" else unknowns)
        memory = 2 * images * unknowns * largest * 4 if method != "sequential" else images * 4096
        pieces = 8 * PIECE_ROWS * largest * 4 * 4  # activations of one piece of rows
        field = "inputs" if request.inputs is not None else "batch"
        return Cost(memory + pieces, solve + (images * flops if request.verify else 0.0), field)

    @staticmethod
    def parse(info: ModelInfo, limit: int) -> Callable[[Any, str], np.ndarray]:
        shape = (info.shape[0], info.shape[1], info.shape[2])
        return lambda value, field: image_array(value, shape, field, limit, info.name)

    def check(self, task: str, request: Any, info: ModelInfo, limits: Limits) -> None:
        inference.check_infer(request, self.parse(info, limits.max_batch_inputs), limits.max_batch_inputs)

    def start(self, task: str, engine: Engine, request: Any, method: str, block_size: int | None) -> SliceWork:
        system: DenseSystem = engine.system(request.model)
        info = engine.info(request.model)
        images = inference.request_inputs(engine, request, self.parse(info, sys.maxsize))

        def run() -> Generator[Any, None, Forward]:
            if method == "sequential":  # the ordinary forward, layer after layer
                logits = yield from rows_in_pieces(system.model, images)
                return Forward(logits, [system.length] * images.shape[0], True, 0.0)
            solved = yield from dense_pieces(system, images, method, request.tol, request.max_iterations, PIECE_ROWS)
            return Forward(solved.logits, solved.iterations.tolist(), bool(solved.converged.all()), solved.residual)

        return inference.infer_work(request, method, system.length, run, lambda: rows_in_pieces(system.model, images),
                                    lambda logits: logits.argmax(dim=1).tolist())  # fmt: skip
