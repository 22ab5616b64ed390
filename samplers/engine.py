"""The engine: registered models loaded once on one device, and the one way from a request to its work.

One engine serves the CLI, the embedded server and each Redis worker. Its models come from the registry
directory it is given (default: the shipped checkpoints) and from installed plugins (``samplers.plugins``); each
model's manifest "kind" names its family (``samplers.families``). Loading is lazy (first use) and cached; every
model runs in eval mode under ``torch.inference_mode`` with the determinism settings applied.

A request goes ``check`` (its family's checks, NumPy only: the API thread may call it) -> ``start`` (``auto``
resolved, here and nowhere else; the family builds the work) -> the work is done by ``samplers.work.run_work``
(library, CLI) or by the server's worker, which batches it with other work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from models.devices import resolve_device
from models.registry import Entry, UnknownModelError, load_model, read_manifest, registry_dir
from samplers import auto
from samplers.determinism import make_deterministic
from samplers.families import FAMILIES, get_family
from samplers.family import KINDS, Cost, Family, Limits, ModelInfo
from samplers.inputs import InputError, WrongKindError
from samplers.plugins import checkpoint_dirs, load_plugins
from samplers.requests import REQUESTS
from samplers.system import SamplingSystem
from samplers.work import SliceWork, Work, run_work
from solvers import FixedPointBatch

log = logging.getLogger("parafeed.engine")


class Engine:
    def __init__(
        self,
        device: str | None = "auto",
        registry: str | Path | None = None,
        plugins: Sequence[str] = (),
        data: str | Path | None = None,
    ) -> None:
        """device: auto | cpu | cuda[:N]; registry: checkpoint directory (default: the shipped ones); plugins:
        "module:NAME" plugin models beside the installed ones; data: Fashion-MNIST IDX directory for test inputs."""
        make_deterministic()
        self.device = resolve_device(device)
        self.data = data
        self.entries: dict[str, Entry] = {}
        self.sources: dict[str, Path] = {}  # model name -> the registry directory it comes from
        for directory in [registry_dir(registry), *checkpoint_dirs(load_plugins(plugins))]:
            self._read(directory)
        self._models: dict[str, torch.nn.Module] = {}
        self._systems: dict[str, Any] = {}
        self._test: Any = None  # the test split, read on first use

    def _read(self, directory: Path) -> None:
        for name, entry in read_manifest(directory).items():
            if name in self.entries:
                log.warning("model listed twice; the first stays", extra={"model": name, "registry": str(directory)})
            elif entry.kind not in FAMILIES:
                log.warning("no family serves this kind: not served", extra={"model": name, "kind": entry.kind})
            else:
                self.entries[name], self.sources[name] = entry, directory

    # -- what is served --------------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        return [self.info(name) for name in self.entries]

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(self.entries) or 'none'}")
        return self.entries[name]

    def family(self, name: str) -> Family:
        return get_family(self.entry(name).kind)

    def info(self, name: str) -> ModelInfo:
        return self.family(name).info(self.entry(name))

    def serving(self, name: str, task: str) -> tuple[Family, ModelInfo]:
        """The family and description of a model that serves ``task`` (else WrongKindError naming the model)."""
        family, info = self.family(name), self.info(name)
        if task not in info.tasks:
            kinds = " or ".join(kind for kind, tasks in KINDS.items() if task in tasks)
            raise WrongKindError(f"{name} is a {info.kind}; /{task} serves {kinds} models")
        return family, info

    # -- loaded models -----------------------------------------------------------------------------------------
    def model(self, name: str) -> Any:
        self.entry(name)
        if name not in self._models:
            self._models[name] = load_model(name, self.sources[name], self.device)
        return self._models[name]

    def system(self, name: str) -> Any:
        """What the model's family builds from it once (a sampling system, a dense system, or the model)."""
        if name not in self._systems:
            self._systems[name] = self.family(name).system(self.model(name), name)
        return self._systems[name]

    def sampling_system(self, name: str) -> SamplingSystem:
        self.serving(name, "sample")
        return self.system(name)

    def load_all(self) -> None:
        """Load (and, for plugins, check) every model now: the server does this at start-up, so ready means ready."""
        for name in self.entries:
            self.system(name)

    # -- requests ----------------------------------------------------------------------------------------------
    def resolve(self, name: str, task: str, method: str, size: int | None = None) -> auto.Choice:
        """ "auto" -> the measured fastest exact method for this model's family, task, device type and request size
        (``size``: samples of a sampling request)."""
        if method != "auto":
            return auto.Choice(method)
        offer = self.family(name).offers_for(self.entry(name))[task]
        choice = auto.pick(offer.auto_key, self.device.type, offer.fallback, size)
        return choice if choice.method in offer.methods else auto.Choice(offer.fallback)

    def check(self, task: str, request: Any, limits: Limits) -> Cost:
        """The family's checks of a validated request, then its estimated cost against the per-request bounds
        (raises InputError naming the field). No torch: the API thread calls it."""
        family, info = self.serving(request.model, task)
        family.check(task, request, info, limits)
        method = self.resolve(request.model, task, request.method, getattr(request, "num_samples", None)).method
        cost = family.cost(task, request, self.entry(request.model), method)
        if cost.memory > limits.max_memory:
            raise InputError(cost.field, f"needs about {cost.memory / 2**20:,.0f} MiB by {method}; this server allows "
                             f"{limits.max_memory / 2**20:,.0f} MiB per request: use fewer inputs")  # fmt: skip
        if cost.flops > limits.max_flops:
            allowed = f"{limits.max_flops / 1e9:,.0f} GFLOP per request"
            raise InputError(cost.field, f"needs up to {cost.flops / 1e9:,.0f} GFLOP by {method}; this server allows "
                             f"{allowed}: use fewer inputs or another method")  # fmt: skip
        return cost

    def start(self, task: str, request: Any, cost: Cost | None = None) -> Work:
        """The work that answers a checked request (``cost``: its estimate, which sliced work carries)."""
        family, _ = self.serving(request.model, task)
        choice = self.resolve(request.model, task, request.method, getattr(request, "num_samples", None))
        work = family.start(task, self, request, choice.method, choice.block_size)
        if isinstance(work, SliceWork) and cost is not None:
            work.memory = cost.memory
        return work

    def run(
        self, task: str, request: Any, limits: Limits | None = None,
        callback: Callable[[FixedPointBatch], None] | None = None,
    ) -> BaseModel:  # fmt: skip
        """Check, start and do a request in this thread: the library's and the CLI's path to a response."""
        cost = self.check(task, request, limits or Limits())
        return run_work(self.start(task, request, cost), self.device.type, callback)

    def call(self, task: str, **fields: Any) -> BaseModel:
        """``run`` with the request's fields as keywords, e.g. ``engine.call("infer", model="...", batch=8)``."""
        return self.run(task, REQUESTS[task](**fields))

    # -- test-set inputs ---------------------------------------------------------------------------------------
    def test_inputs(self, name: str, batch: int, seed: int) -> torch.Tensor:
        """``batch`` test-set inputs for the model, picked by ``seed`` and prepared as it trained on them."""
        from models.tasks import get_task

        split = self.test_split()
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:batch]
        config = getattr(self.model(name), "config", None)
        return get_task(self.entry(name).kind).prepare(split.subset(order), config)[0].to(self.device)

    def test_split(self) -> Any:
        """The Fashion-MNIST test split, read once (raises models.data.DataNotFoundError if not installed)."""
        if self._test is None:
            from models import data as datasets

            self._test = datasets.load_split("test", self.data)
        return self._test
