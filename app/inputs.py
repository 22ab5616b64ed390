"""Turning request inputs into arrays, with errors that name the field at fault (422, never a traceback).

Classifier inputs: (B, 28, 28) or (B, 1, 28, 28) images in [-1, 1]. Sequence inputs and targets: (B, T) pixels
in [0, 1] with T the model's sequence length. No input: B test-set inputs picked by ``seed``.

Validation uses NumPy, not torch, because the API validates on its event-loop thread: one parallel torch op on a
second thread leaves a second OpenMP thread team behind, more OpenMP threads than cores, and every later solve of
the embedded worker about 50% slower (measured on 2 cores). Only the worker thread turns arrays into tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from samplers.catalog import ModelInfo


class InputError(ValueError):
    """A request field that does not fit the model: (field, message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _array(value: Any, field: str, limit: int) -> np.ndarray:
    if isinstance(value, bool) or not isinstance(value, list | tuple):
        raise InputError(field, "must be a rectangular array of numbers")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as error:  # ragged nesting
        raise InputError(field, f"must be a rectangular array of numbers ({error})") from None
    if raw.dtype.kind not in "biuf":  # strings, objects (None, dicts, huge integers)
        raise InputError(field, "must be a rectangular array of numbers")
    with np.errstate(over="ignore", invalid="ignore"):  # out of float32 range -> inf, refused just below
        array = raw.astype(np.float32)
    if array.ndim == 0 or array.shape[0] == 0:
        raise InputError(field, "must hold at least one input")
    if array.shape[0] > limit:
        raise InputError(field, f"at most {limit} inputs per request; got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise InputError(field, "must be finite numbers")
    return array


def sequence_array(value: Any, info: ModelInfo, field: str, limit: int) -> np.ndarray:
    """(B, T) float32 pixels in [0, 1]."""
    array = _array(value, field, limit)
    length = info.sequential_steps
    if array.ndim != 2 or array.shape[1] != length:
        raise InputError(field, f"must have shape (B, {length}) for {info.name}; got {list(array.shape)}")
    if (array < 0).any() or (array > 1).any():
        raise InputError(field, "pixel values must lie in [0, 1]")
    return array


def image_array(value: Any, info: ModelInfo, field: str, limit: int) -> np.ndarray:
    """(B, C, H, W) float32 pixels in [-1, 1]."""
    array = _array(value, field, limit)
    channels, height, width = info.shape
    if array.ndim == 3 and channels == 1:
        array = array[:, None]
    if tuple(array.shape[1:]) != (channels, height, width):
        raise InputError(field, f"must have shape (B, {channels}, {height}, {width}) for {info.name}")
    if (np.abs(array) > 1).any():
        raise InputError(field, "pixel values must lie in [-1, 1] (x / 127.5 - 1 for 8-bit images)")
    return array


def input_array(payload: dict[str, Any], info: ModelInfo, limit: int) -> np.ndarray | None:
    """The payload's inputs, checked against the model, or None (inputs come from the test set)."""
    if payload.get("inputs") is None:
        return None
    if info.kind == "classifier":
        return image_array(payload["inputs"], info, "inputs", limit)
    return sequence_array(payload["inputs"], info, "inputs", limit)


def model_inputs(payload: dict[str, Any], info: ModelInfo, limit: int) -> torch.Tensor | None:
    """``input_array`` as a tensor (worker side: the thread that runs the models)."""
    array = input_array(payload, info, limit)
    return None if array is None else torch.from_numpy(np.ascontiguousarray(array))


def model_targets(payload: dict[str, Any], info: ModelInfo, limit: int) -> torch.Tensor | None:
    """The payload's targets as a (B, T) tensor, or None (the model's own next-pixel targets)."""
    if payload.get("targets") is None:
        return None
    return torch.from_numpy(sequence_array(payload["targets"], info, "targets", limit))


def check_payload(kind: str, payload: dict[str, Any], info: ModelInfo, settings_limit: int) -> None:
    """Validate a gradient/infer payload against its model (raises InputError)."""
    wanted = {"gradient": ("sequence",), "infer": ("classifier", "sequence")}[kind]
    if info.kind not in wanted:
        raise InputError("model", f"{info.name} is a {info.kind}; /{kind} serves {' or '.join(wanted)} models")
    inputs = input_array(payload, info, settings_limit)
    if payload.get("targets") is not None:
        if inputs is None:
            raise InputError("targets", "targets need explicit inputs")
        targets = sequence_array(payload["targets"], info, "targets", settings_limit)
        if targets.shape != inputs.shape:
            raise InputError("targets", f"must have the shape of inputs {list(inputs.shape)}")
    if payload.get("batch", 1) > settings_limit and inputs is None:
        raise InputError("batch", f"at most {settings_limit} inputs per request")
