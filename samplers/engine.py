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

    def load_all(self) -> None:
        """Load every registered model now (the server does this at start-up, so /readyz means ready)."""
        for name in self.entries:
            self.model(name)
