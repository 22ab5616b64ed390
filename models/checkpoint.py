"""Checkpoints as safetensors files: weights, and for training runs the optimizer and progress. Never pickle.

A checkpoint holds tensors plus string metadata; parafeed stores ``kind`` and ``config`` (JSON) in the metadata
so a file alone says how to rebuild its model. Writes go to a temporary file that is renamed into place, so a
crash mid-write never leaves a truncated checkpoint (nothing is lost but the work since the previous one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Rebuild a config dataclass from JSON, turning lists back into tuples where the field is a tuple."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    converted = {}
    for name, value in values.items():
        hint = hints[name]
        is_tuple = typing.get_origin(hint) is tuple or (
            isinstance(hint, types.UnionType) and any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
        )
        converted[name] = _to_tuple(value) if is_tuple and isinstance(value, list) else value
    return cls(**converted)


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_model(model: torch.nn.Module, kind: str, config: Any, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Weights and buffers of ``model`` plus its kind and config (and any JSON-able ``extra``) in the metadata."""
    metadata = {"kind": kind, "config": json.dumps(config_to_dict(config)), "extra": json.dumps(extra or {})}
    _atomic_save(dict(model.state_dict()), metadata, path)


def read_metadata(path: Path) -> dict[str, Any]:
    """{"kind", "config" (dict), "extra" (dict)} from a checkpoint, without reading its tensors."""
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if "kind" not in raw or "config" not in raw:
        raise ValueError(f"{path} is not a parafeed checkpoint (no kind/config metadata)")
    return {"kind": raw["kind"], "config": json.loads(raw["config"]), "extra": json.loads(raw.get("extra", "{}"))}


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(path), device=str(device))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_training_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    kind: str,
    config: Any,
    progress: dict[str, Any],
    path: Path,
) -> None:
    """Everything a run needs to resume: weights, optimizer tensors, RNG state, and ``progress`` (JSON)."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, slots in state["state"].items():
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{slot}"] = value
            else:
                scalars[f"{index}/{slot}"] = value
    tensors["rng/torch"] = torch.get_rng_state()
    metadata = {
        "kind": kind,
        "config": json.dumps(config_to_dict(config)),
        "progress": json.dumps(progress),
        "param_groups": json.dumps(state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
    }
    _atomic_save(tensors, metadata, path)


def load_training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    """Restore what ``save_training_state`` wrote; returns the saved progress."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    tensors = load_file(str(path))
    model.load_state_dict({k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, slot = key.split("/", 2)
            state.setdefault(int(index), {})[slot] = value
    for key, value in json.loads(metadata.get("optim_scalars", "{}")).items():
        index, slot = key.split("/", 1)
        state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    torch.set_rng_state(tensors["rng/torch"])
    progress: dict[str, Any] = json.loads(metadata["progress"])
    return progress
