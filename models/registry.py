"""The checkpoint registry: named, trained models shipped with parafeed (or your own), loaded without pickle.

A registry directory holds ``manifest.json`` and the safetensors files it names. Each entry records the model
kind and config, the dataset, the exact training command and its wall time, the evaluation figures on the full
test set and on a small slice (what the tests re-check), and the file's SHA-256, which is verified before a
single tensor is read.

Where: ``load_model(name, directory)``, or the shipped models/checkpoints/ (the service's ``registry`` setting
passes its directory; plugins bring their own). Kinds: the built-in tasks (``models.tasks``) and kinds that plugins
register with ``register_kind``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.checkpoint import config_from_dict, config_to_dict, load_tensors, read_metadata, sha256
from models.tasks import get_task

SHIPPED = Path(__file__).resolve().parent / "checkpoints"
SLICE = 1000  # test images in the slice evaluation the tests repeat


class UnknownModelError(KeyError):
    """No entry of that name in the registry."""


class ChecksumError(ValueError):
    """A checkpoint file does not match the SHA-256 its manifest records."""


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    file: str
    sha256: str
    config: dict[str, Any]
    description: str = ""
    dataset: str = "fashion-mnist"
    train_command: str = ""
    train_seconds: float | None = None
    eval: dict[str, Any] = field(default_factory=dict)  # full test set
    eval_slice: dict[str, Any] = field(default_factory=dict)  # first SLICE test images
    extra: dict[str, Any] = field(default_factory=dict)


# kind -> (config dataclass, build): model kinds that plugins add (samplers.plugins), beside models.tasks
BUILDERS: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {}


def register_kind(kind: str, config_cls: type, build: Callable[[Any], nn.Module]) -> None:
    """Let checkpoints of ``kind`` be built: ``build(config_cls(**entry.config))``."""
    BUILDERS[kind] = (config_cls, build)


def registry_dir(directory: str | Path | None = None) -> Path:
    return SHIPPED if directory is None else Path(directory)


def read_manifest(directory: str | Path | None = None) -> dict[str, Entry]:
    path = registry_dir(directory) / "manifest.json"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {name: Entry(name=name, **{k: v for k, v in value.items() if k != "name"}) for name, value in raw.items()}


def write_manifest(entries: dict[str, Entry], directory: str | Path | None = None) -> None:
    path = registry_dir(directory) / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: {k: v for k, v in vars(e).items() if k != "name"} for name, e in sorted(entries.items())}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def list_models(directory: str | Path | None = None) -> list[Entry]:
    return list(read_manifest(directory).values())


def get_entry(name: str, directory: str | Path | None = None) -> Entry:
    entries = read_manifest(directory)
    if name not in entries:
        known = ", ".join(entries) or "none"
        raise UnknownModelError(f"unknown model {name!r}; registry {registry_dir(directory)} has: {known}")
    return entries[name]


def build_from(kind: str, config: dict[str, Any]) -> tuple[nn.Module, Any]:
    if kind in BUILDERS:
        config_cls, build = BUILDERS[kind]
    else:
        task = get_task(kind)
        config_cls, build = task.config_cls, task.build
    cfg: Any = config_from_dict(config_cls, config)
    return build(cfg), cfg


def load_model(name: str, directory: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The named model, weights verified against the manifest's SHA-256, in eval mode on ``device``."""
    entry = get_entry(name, directory)
    path = registry_dir(directory) / entry.file
    digest = sha256(path)
    if digest != entry.sha256:
        raise ChecksumError(f"{path}: SHA-256 {digest} does not match the manifest ({entry.sha256})")
    model, _ = build_from(entry.kind, entry.config)
    model.load_state_dict(load_tensors(path))  # safetensors: plain tensors, nothing is unpickled
    return model.to(device).eval()


def publish(
    checkpoint: Path,
    name: str,
    directory: str | Path | None = None,
    train_command: str = "",
    train_seconds: float | None = None,
    description: str | None = None,
    data: str | None = None,
) -> Entry:
    """Copy a trained checkpoint into a registry, evaluate it (full test set and slice), record the entry."""
    from models import data as datasets

    meta = read_metadata(checkpoint)
    task = get_task(meta["kind"])
    target = registry_dir(directory)
    target.mkdir(parents=True, exist_ok=True)
    file = f"{name}.safetensors"
    if checkpoint.resolve() != (target / file).resolve():
        shutil.copyfile(checkpoint, target / file)
    model, cfg = build_from(meta["kind"], meta["config"])
    model.load_state_dict(load_tensors(target / file))
    model.eval()
    test = datasets.load_split("test", data)
    train = datasets.load_split("train", data)
    entry = Entry(
        name=name,
        kind=meta["kind"],
        file=file,
        sha256=sha256(target / file),
        config=config_to_dict(cfg),
        description=description or task.description,
        train_command=train_command,
        train_seconds=train_seconds,
        eval=task.evaluate(model, test, train),
        eval_slice=task.evaluate(model, test.subset(slice(0, SLICE)), train),
        extra=meta["extra"],
    )
    entries = read_manifest(directory)
    entries[name] = entry
    write_manifest(entries, directory)
    return entry


def evaluate(
    name: str, directory: str | Path | None = None, data: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Re-evaluate a registered model on the test set (or its first ``limit`` images): the manifest's figures."""
    from models import data as datasets

    entry = get_entry(name, directory)
    model = load_model(name, directory)
    test = datasets.load_split("test", data)
    if limit is not None:
        test = test.subset(slice(0, limit))
    return get_task(entry.kind).evaluate(model, test, datasets.load_split("train", data))
