"""Turning request inputs into tensors, with errors that name the field at fault (422, never a traceback).

Classifier inputs: (B, 28, 28) or (B, 1, 28, 28) images in [-1, 1]. Sequence inputs and targets: (B, T) pixels
in [0, 1] with T the model's sequence length. No input: B test-set inputs picked by ``seed``.
"""

from __future__ import annotations

from typing import Any

import torch

from samplers.catalog import ModelInfo


class InputError(ValueError):
    """A request field that does not fit the model: (field, message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _tensor(value: Any, field: str, limit: int) -> torch.Tensor:
    try:
        tensor = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(field, f"must be a rectangular array of numbers ({error})") from None
    if tensor.dim() == 0 or tensor.shape[0] == 0:
        raise InputError(field, "must hold at least one input")
    if tensor.shape[0] > limit:
        raise InputError(field, f"at most {limit} inputs per request; got {tensor.shape[0]}")
    if not bool(torch.isfinite(tensor).all()):
        raise InputError(field, "must be finite numbers")
    return tensor


def sequence_tensor(value: Any, info: ModelInfo, field: str, limit: int) -> torch.Tensor:
    tensor = _tensor(value, field, limit)
    length = info.sequential_steps
    if tensor.dim() != 2 or tensor.shape[1] != length:
        raise InputError(field, f"must have shape (B, {length}) for {info.name}; got {list(tensor.shape)}")
    if bool((tensor < 0).any() or (tensor > 1).any()):
        raise InputError(field, "pixel values must lie in [0, 1]")
    return tensor


def image_tensor(value: Any, info: ModelInfo, field: str, limit: int) -> torch.Tensor:
    tensor = _tensor(value, field, limit)
    channels, height, width = info.shape
    if tensor.dim() == 3 and channels == 1:
        tensor = tensor[:, None]
    if tuple(tensor.shape[1:]) != (channels, height, width):
        raise InputError(field, f"must have shape (B, {channels}, {height}, {width}) for {info.name}")
    if bool((tensor.abs() > 1).any()):
        raise InputError(field, "pixel values must lie in [-1, 1] (x / 127.5 - 1 for 8-bit images)")
    return tensor


def model_inputs(payload: dict[str, Any], info: ModelInfo, limit: int) -> torch.Tensor | None:
    """The payload's inputs as a tensor for this model, or None (inputs come from the test set)."""
    if payload.get("inputs") is None:
        return None
    if info.kind == "classifier":
        return image_tensor(payload["inputs"], info, "inputs", limit)
    return sequence_tensor(payload["inputs"], info, "inputs", limit)


def check_payload(kind: str, payload: dict[str, Any], info: ModelInfo, settings_limit: int) -> None:
    """Validate a gradient/infer payload against its model (raises InputError)."""
    wanted = {"gradient": ("sequence",), "infer": ("classifier", "sequence")}[kind]
    if info.kind not in wanted:
        raise InputError("model", f"{info.name} is a {info.kind}; /{kind} serves {' or '.join(wanted)} models")
    inputs = model_inputs(payload, info, settings_limit)
    if payload.get("targets") is not None:
        if inputs is None:
            raise InputError("targets", "targets need explicit inputs")
        targets = sequence_tensor(payload["targets"], info, "targets", settings_limit)
        if targets.shape != inputs.shape:
            raise InputError("targets", f"must have the shape of inputs {list(inputs.shape)}")
    if payload.get("batch", 1) > settings_limit and inputs is None:
        raise InputError("batch", f"at most {settings_limit} inputs per request")
