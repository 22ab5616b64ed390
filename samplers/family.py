"""Model families: everything parafeed can do with one kind of model, declared in one place per family.

A family (MADE, PixelCNN++, DenseNet, the recurrent regressors, a plugin's autoregressive model) says which tasks
it serves (``sample``, ``infer``, ``gradient``: the POST endpoints of the same names), which methods each task
offers and which measurement ``auto`` follows (``Offer``), how its models appear in GET /models (``describe``),
how a request is checked before it is queued (``check``: NumPy only, it runs on the API's event-loop thread) and
how a request becomes work for a solver (``start``, on the thread that runs the models; see ``samplers.work``).

Everything outside ``samplers/families`` goes through this protocol: the library call, the CLI, the server's
routes and its worker. The request and response models of each task live in ``samplers.requests``; the families
are registered in ``samplers.registry``. Adding a family is one module under ``samplers/families`` (and its
tests); adding a method is an entry in its family's ``offers`` and a branch in its ``start``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from models.registry import Entry

if TYPE_CHECKING:
    import torch

    from samplers.engine import Engine
    from samplers.work import Work

TASKS: tuple[str, ...] = ("sample", "infer", "gradient")  # one POST endpoint each
KINDS: dict[str, tuple[str, ...]] = {  # what GET /models calls a model, by the tasks its family serves
    "sampler": ("sample",),
    "classifier": ("infer",),
    "sequence": ("infer", "gradient"),
}


@dataclass(frozen=True)
class Offer:
    """The methods a family offers for one task."""

    methods: tuple[str, ...]  # concrete methods a request may name ("auto" is always offered too)
    auto_key: str  # the entry of ``samplers/auto_methods.json`` that a benchmark measured for ``auto``
    fallback: str  # what ``auto`` serves where nothing was measured: an exact method


@dataclass(frozen=True)
class Limits:
    """Per-request bounds of the process that checks a request (the server's settings; generous for the CLI)."""

    max_samples: int = 1024  # samples per /sample request
    max_batch_rows: int = 2048  # rows a worker solves at once (verify doubles a request's rows)
    max_batch_inputs: int = 1024  # inputs per /infer or /gradient request
    max_memory: int = 8 * 2**30  # bytes one request may hold at its peak (estimate)
    max_flops: float = 1e14  # arithmetic one request may take, worst case (estimate)


@dataclass(frozen=True)
class Cost:
    """What a request will take, estimated from its shape and method before it runs (worst case)."""

    memory: int  # bytes held at the peak
    flops: float  # floating-point operations, every iteration the method may need
    field: str  # the request field that sets the size (named in a refusal)


class ModelInfo(BaseModel):
    """One served model, as GET /models lists it."""

    name: str = Field(description="registry name: the `model` field of requests")
    kind: str = Field(description="sampler (POST /sample), classifier (POST /infer) or sequence (/infer, /gradient)")
    shape: list[int] = Field(description="one sample (C, H, W), one input image (C, H, W), or one sequence (T,)")
    sequential_steps: int = Field(description="dependent steps of the ordinary sequential computation")
    methods: list[str] = Field(description="every method any of its endpoints accepts, `auto` included")
    tasks: dict[str, list[str]] = Field(description="methods per endpoint: {task: methods}")
    description: str = Field(description="what the model is and what it was trained on")


class Family:
    """A model family. Subclasses set the class attributes and implement ``describe``, ``check`` and ``start``."""

    name: str = ""  # the manifest's "kind" of its checkpoints (e.g. "made")
    kind: str = ""  # a key of KINDS
    offers: dict[str, Offer] = {}  # noqa: RUF012  task -> the most any model of the family offers for it

    def offers_for(self, entry: Entry) -> dict[str, Offer]:
        """Task -> what this model offers (a model's config may narrow the family's ``offers``)."""
        return self.offers

    def describe(self, entry: Entry) -> tuple[list[int], int]:
        """(shape, sequential_steps) of a model of this family, from its manifest entry alone (no weights)."""
        raise NotImplementedError

    def system(self, model: torch.nn.Module, name: str) -> Any:
        """What the family builds once per loaded model (cached by the engine): a sampling system, a dense system,
        or the model itself."""
        return model

    def check(self, task: str, request: Any, info: ModelInfo, limits: Limits) -> None:
        """Raise ``samplers.inputs.InputError`` naming the field at fault. No torch: the API thread calls it."""
        raise NotImplementedError

    def cost(self, task: str, request: Any, entry: Entry, method: str) -> Cost:
        """The request's estimated memory and arithmetic by ``method`` (checked requests only). No torch."""
        raise NotImplementedError

    def start(self, task: str, engine: Engine, request: Any, method: str, block_size: int | None) -> Work:
        """The work that answers ``request`` by ``method`` ("auto" already resolved; ``block_size`` from the
        request or from ``auto``). Runs on the thread that runs the models."""
        raise NotImplementedError

    def info(self, entry: Entry) -> ModelInfo:
        offers = self.offers_for(entry)
        tasks = {task: [*offer.methods, "auto"] for task, offer in offers.items()}
        methods = [*dict.fromkeys(m for offer in offers.values() for m in offer.methods), "auto"]
        shape, steps = self.describe(entry)
        return ModelInfo(name=entry.name, kind=self.kind, shape=shape, sequential_steps=steps, methods=methods,
                         tasks=tasks, description=entry.description)  # fmt: skip
