"""Request inputs as arrays, checked with errors that name the field at fault (a 422, never a traceback).

Classifier inputs: (B, H, W) or (B, C, H, W) images in [-1, 1]. Sequence inputs and targets: (B, T) pixels in
[0, 1] with T the model's sequence length. Families call these from their ``check`` (the API's event-loop thread)
and their ``start`` (the worker).

Validation uses NumPy, not torch, because the API validates on its event-loop thread: one parallel torch op on a
second thread leaves a second OpenMP thread team behind, more OpenMP threads than cores, and every later solve of
the embedded worker about 50% slower (measured on 2 cores). Only the worker thread turns arrays into tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class InputError(ValueError):
    """A request field that does not fit the model: (field, message). Answered as 422 naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class WrongKindError(InputError):
    """The model exists but does not do what was asked (e.g. sampling from a classifier): the ``model`` field."""

    def __init__(self, message: str) -> None:
        super().__init__("model", message)


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


def sequence_array(value: Any, length: int, field: str, limit: int, model: str) -> np.ndarray:
    """(B, T) float32 pixels in [0, 1], T = ``length``."""
    array = _array(value, field, limit)
    if array.ndim != 2 or array.shape[1] != length:
        raise InputError(field, f"must have shape (B, {length}) for {model}; got {list(array.shape)}")
    if (array < 0).any() or (array > 1).any():
        raise InputError(field, "pixel values must lie in [0, 1]")
    return array


def image_array(value: Any, shape: tuple[int, int, int], field: str, limit: int, model: str) -> np.ndarray:
    """(B, C, H, W) float32 pixels in [-1, 1]; (B, H, W) is taken for one channel."""
    array = _array(value, field, limit)
    channels, height, width = shape
    if array.ndim == 3 and channels == 1:
        array = array[:, None]
    if tuple(array.shape[1:]) != (channels, height, width):
        raise InputError(field, f"must have shape (B, {channels}, {height}, {width}) for {model}")
    if (np.abs(array) > 1).any():
        raise InputError(field, "pixel values must lie in [-1, 1] (x / 127.5 - 1 for 8-bit images)")
    return array


def check_batch(batch: int, inputs: np.ndarray | None, limit: int) -> None:
    """Without explicit inputs, ``batch`` test-set inputs are drawn: at most ``limit``."""
    if inputs is None and batch > limit:
        raise InputError("batch", f"at most {limit} inputs per request")


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A checked array as a float32 tensor (worker side: the thread that runs the models)."""
    return torch.from_numpy(np.ascontiguousarray(array))
