"""The engine: registered models loaded once on one device, and the systems parafeed solves with them.

One engine serves the CLI, the embedded server and each Redis worker. Loading is lazy (first use) and cached;
every model runs in eval mode under ``torch.inference_mode`` with the determinism settings applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.registry import UnknownModelError, load_model, read_manifest
from samplers.catalog import ModelInfo, describe
from samplers.determinism import make_deterministic, resolve_device
from samplers.made import MadeSystem
from samplers.pixelcnnpp import PixelCNNppSystem
from samplers.system import SamplingSystem


class WrongKindError(ValueError):
    """The model exists but does not do what was asked (e.g. sampling from a classifier)."""


class Engine:
    def __init__(self, device: str | None = "auto", registry: str | Path | None = None) -> None:
        make_deterministic()
        self.device = resolve_device(device)
        self.registry = registry
        self.entries = read_manifest(registry)
        self._models: dict[str, torch.nn.Module] = {}
        self._systems: dict[str, SamplingSystem] = {}
        self._dense: dict[str, Any] = {}
        self._test: Any = None  # the test split, read on first use

    def models(self) -> list[ModelInfo]:
        return [describe(entry) for entry in self.entries.values()]

    def info(self, name: str) -> ModelInfo:
        if name not in self.entries:
            raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(self.entries) or 'none'}")
        return describe(self.entries[name])

    def model(self, name: str) -> torch.nn.Module:
        self.info(name)
        if name not in self._models:
            self._models[name] = load_model(name, self.registry, self.device)
        return self._models[name]

    def sampling_system(self, name: str) -> SamplingSystem:
        info = self.info(name)
        if info.kind != "sampler":
            raise WrongKindError(f"model {name!r} is a {info.kind}, not a sampler")
        if name not in self._systems:
            model: Any = self.model(name)
            system: SamplingSystem = MadeSystem(model, name) if info.family == "made" else PixelCNNppSystem(model, name)
            self._systems[name] = system
        return self._systems[name]

    def test_inputs(self, name: str, batch: int, seed: int) -> torch.Tensor:
        """``batch`` test-set inputs for the model, picked by ``seed`` and prepared as it trained on them."""
        from models.tasks import get_task

        split = self.test_split()
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:batch]
        return get_task(self.info(name).family).prepare(split.subset(order))[0].to(self.device)

    def test_split(self) -> Any:
        """The Fashion-MNIST test split, read once (raises models.data.DataNotFoundError if not installed)."""
        if self._test is None:
            from models import data as datasets

            self._test = datasets.load_split("test")
        return self._test

    def gradient(
        self, name: str, inputs: torch.Tensor, method: str = "auto", wrt: str = "params",
        max_iterations: int | None = None, verify: bool = False, targets: torch.Tensor | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The body of POST /gradient. inputs, targets: (B, T) sequences in [0, 1]."""
        from samplers.gradients import gradient_body

        info = self.info(name)
        if info.kind != "sequence":
            raise WrongKindError(f"model {name!r} is a {info.kind}; gradients are served for sequence models")
        model: Any = self.model(name)
        used = self.resolve(f"{info.family}-gradient", method)
        return gradient_body(model, name, inputs, used, wrt, max_iterations, verify, targets)

    def resolve(self, key: str, method: str) -> str:
        """ "auto" -> the measured fastest exact method for ``key`` on this device (``samplers.auto``)."""
        from samplers.auto import pick_method

        return pick_method(key, self.device.type) if method == "auto" else method

    def infer(
        self, name: str, inputs: torch.Tensor, method: str = "auto", tol: float = 0.0,
        max_iterations: int | None = None, verify: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        """The body of POST /infer: a classifier's logits or a sequence model's next-pixel predictions."""
        from samplers import dense, sequence

        info = self.info(name)
        if info.kind == "sampler":
            raise WrongKindError(f"model {name!r} is a sampler; use /sample")
        used = self.resolve(f"{info.family}-infer", method)
        model: Any = self.model(name)
        if info.kind == "classifier":
            if name not in self._dense:
                self._dense[name] = dense.DenseSystem(model)
            return dense.infer_body(self._dense[name], name, inputs, used, tol, max_iterations, verify)
        return sequence.infer_body(model, name, inputs, used, tol, max_iterations, verify)

    def load_all(self) -> None:
        """Load every registered model now (the server does this at start-up, so /readyz means ready)."""
        for name in self.entries:
            self.model(name)
