"""What each model family learns from the data, how its loss is measured, and its training defaults.

A task turns a data split into tensors, gives a per-example loss for training, and evaluates a trained model
into the figures the manifest records. The training loop (``models.training``) and the evaluation command are
the same for every family; only this file knows their differences.

Units: generative models report negative log-likelihood in nats per image and bits per dimension; the classifier
reports accuracy; the RNNs report mean squared error per predicted pixel beside a trivial predictor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models import data as datasets
from models.densenet import DenseNet, DenseNetConfig
from models.made import MADE, MADEConfig
from models.pixelcnnpp import PixelCNNpp, PixelCNNppConfig
from models.rnn import RecurrentRegressor, RNNConfig

Batch = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class TrainDefaults:
    """Per-family defaults of ``parafeed train`` (each overridable on the command line)."""

    epochs: int
    batch_size: int
    lr: float
    lr_decay: float = 1.0  # multiplied into the learning rate after every epoch
    weight_decay: float = 0.0
    grad_clip: float | None = None
    patience: int | None = 5  # early stopping: epochs without a better validation loss
    model: dict[str, Any] = field(default_factory=dict)  # config overrides for the shipped size


def batches(tensors: Batch, batch_size: int) -> Iterator[Batch]:
    for start in range(0, tensors[0].shape[0], batch_size):
        yield tuple(t[start : start + batch_size] for t in tensors)


def mean_over(fn: Callable[[Batch], torch.Tensor], tensors: Batch, batch_size: int, device: torch.device) -> float:
    """Mean of a per-example quantity over a whole split, summed in float64."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in batches(tensors, batch_size):
            values = fn(tuple(t.to(device) for t in batch))
            total += float(values.double().sum())
            count += values.shape[0]
    return total / max(count, 1)


class Task:
    kind: str = ""
    config_cls: type = object
    model_cls: type[nn.Module] = nn.Module
    description: str = ""
    defaults: TrainDefaults = TrainDefaults(epochs=1, batch_size=64, lr=1e-3)
    eval_batch_size: int = 500

    def build(self, config: Any) -> nn.Module:
        return self.model_cls(config)

    def default_config(self) -> Any:
        return self.config_cls(**self.defaults.model)

    def prepare(self, split: datasets.Split, config: Any = None) -> Batch:
        """Tensors of a split as a model with ``config`` (default: the family's training config) reads them."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Per-example training loss, (B,)."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, split: datasets.Split, train: datasets.Split | None = None) -> dict[str, Any]:
        """The figures recorded in the manifest, on ``split``; ``train`` for baselines fitted on training data."""
        raise NotImplementedError

    def device_of(self, model: nn.Module) -> torch.device:
        return next(model.parameters()).device


class MadeTask(Task):
    kind = "made"
    config_cls = MADEConfig
    model_cls = MADE
    description = "MADE 784-512-512 with direct connections, Fashion-MNIST binarized by pixel > 127"
    defaults = TrainDefaults(epochs=60, batch_size=100, lr=2e-3, lr_decay=0.9, weight_decay=0.1, patience=6)

    def prepare(self, split: datasets.Split, config: Any = None) -> Batch:
        return (datasets.binarize(split.images),)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model.nll(batch[0])  # type: ignore[operator]

    def evaluate(self, model: nn.Module, split: datasets.Split, train: datasets.Split | None = None) -> dict[str, Any]:
        (x,) = self.prepare(split)
        nll = mean_over(lambda b: model.nll(b[0]), (x,), self.eval_batch_size, self.device_of(model))  # type: ignore[operator]
        dims = x.shape[1]
        result = {"nll_nats": round(nll, 4), "bits_per_dim": round(nll / dims / math.log(2), 6), "examples": len(split)}
        if train is not None:
            result["baseline_independent_bernoulli_nll_nats"] = round(independent_bernoulli_nll(train, x), 4)
        return result


def independent_bernoulli_nll(train: datasets.Split, x: torch.Tensor) -> float:
    """NLL (nats/image) of x under independent per-pixel Bernoullis fitted on ``train`` (Laplace smoothing)."""
    p = (datasets.binarize(train.images).sum(0) + 1) / (len(train) + 2)
    log_p = x * p.log() + (1 - x) * (1 - p).log()
    return float(-log_p.sum(1).double().mean())


class PixelCNNppTask(Task):
    kind = "pixelcnnpp"
    config_cls = PixelCNNppConfig
    model_cls = PixelCNNpp
    description = "PixelCNN++ on 8-bit Fashion-MNIST, discretized mixture of logistics"
    defaults = TrainDefaults(epochs=2, batch_size=32, lr=2e-3, lr_decay=0.6, patience=None)
    eval_batch_size = 100

    def prepare(self, split: datasets.Split, config: Any = None) -> Batch:
        return (datasets.to_unit(split.images),)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model.nll(batch[0]) / batch[0][0].numel()  # type: ignore[operator]  # nats per dimension

    def evaluate(self, model: nn.Module, split: datasets.Split, train: datasets.Split | None = None) -> dict[str, Any]:
        (x,) = self.prepare(split)
        nll = mean_over(lambda b: model.nll(b[0]), (x,), self.eval_batch_size, self.device_of(model))  # type: ignore[operator]
        dims = x[0].numel()
        return {"nll_nats": round(nll, 3), "bits_per_dim": round(nll / dims / math.log(2), 5), "examples": len(split)}


class DenseNetTask(Task):
    kind = "densenet"
    config_cls = DenseNetConfig
    model_cls = DenseNet
    description = "DenseNet-BC classifier of Fashion-MNIST; dense blocks solvable layer-parallel"
    defaults = TrainDefaults(epochs=12, batch_size=64, lr=2e-3, lr_decay=0.75, weight_decay=0.05, patience=None)

    def prepare(self, split: datasets.Split, config: Any = None) -> Batch:
        return datasets.to_unit(split.images), split.labels

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        images, labels = batch
        return self.criterion(model(self.augment(images) if model.training else images), labels)

    @staticmethod
    def augment(images: torch.Tensor) -> torch.Tensor:
        """Light augmentation while training: random horizontal flips (the global RNG, one draw per image)."""
        flip = torch.rand(images.shape[0], device=images.device) < 0.5
        return torch.where(flip[:, None, None, None], images.flip(-1), images)

    @staticmethod
    def criterion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-image cross-entropy, (B,)."""
        return F.cross_entropy(logits, labels, reduction="none")

    def evaluate(self, model: nn.Module, split: datasets.Split, train: datasets.Split | None = None) -> dict[str, Any]:
        images, labels = self.prepare(split)
        device = self.device_of(model)

        def correct(b: Batch) -> torch.Tensor:
            return (model(b[0]).argmax(dim=1) == b[1]).double()

        accuracy = mean_over(correct, (images, labels), self.eval_batch_size, device)
        loss = mean_over(lambda b: F.cross_entropy(model(b[0]), b[1], reduction="none"), (images, labels), 500, device)
        return {"accuracy": round(accuracy, 4), "cross_entropy": round(loss, 4), "examples": len(split)}


class RNNTask(Task):
    kind = "rnn"
    config_cls = RNNConfig
    model_cls = RecurrentRegressor
    description = "Vanilla softplus RNN (hidden 128), next-pixel regression on 10x10 Fashion-MNIST (T=100)"
    defaults = TrainDefaults(epochs=10, batch_size=64, lr=2e-3, lr_decay=0.8, grad_clip=1.0, patience=3)

    def prepare(self, split: datasets.Split, config: Any = None) -> Batch:
        size = config.image_size if config is not None else self.defaults.model.get("image_size", RNNConfig.image_size)
        return (datasets.resize(split.images, int(size)).flatten(1),)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model.loss(batch[0])  # type: ignore[operator]

    def evaluate(self, model: nn.Module, split: datasets.Split, train: datasets.Split | None = None) -> dict[str, Any]:
        (x,) = self.prepare(split, model.config)
        mse = mean_over(lambda b: model.loss(b[0]), (x,), self.eval_batch_size, self.device_of(model))  # type: ignore[operator]
        previous = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # trivial: repeat the last pixel
        trivial = float(((previous - x) ** 2).mean(dim=1).double().mean())
        return {"mse": round(mse, 6), "baseline_repeat_previous_mse": round(trivial, 6), "examples": len(split)}


class GRUTask(RNNTask):
    kind = "gru"
    description = "GRU (hidden 64), next-pixel regression on 28x28 Fashion-MNIST read pixel by pixel (T=784)"
    defaults = TrainDefaults(
        epochs=2, batch_size=64, lr=3e-3, lr_decay=0.5, grad_clip=1.0, patience=None,
        model={"cell": "gru", "hidden_size": 64, "image_size": 28},
    )  # fmt: skip


class OrthogonalRNNTask(RNNTask):
    kind = "orthogonal"
    description = (
        "Orthogonal RNN (hidden 128, tanh, recurrent weight from 8128 Givens angles in round-robin rounds),"
        " next-pixel regression on 28x28 Fashion-MNIST (T=784)"
    )
    defaults = TrainDefaults(
        epochs=2, batch_size=64, lr=3e-3, lr_decay=0.5, grad_clip=1.0, patience=None,
        model={"cell": "orthogonal", "hidden_size": 128, "image_size": 28},
    )  # fmt: skip


TASKS: dict[str, Task] = {
    task.kind: task
    for task in (MadeTask(), PixelCNNppTask(), DenseNetTask(), RNNTask(), GRUTask(), OrthogonalRNNTask())
}


def get_task(kind: str) -> Task:
    if kind not in TASKS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(TASKS)}")
    return TASKS[kind]
