"""Request inputs are checked on the API's event-loop thread, without torch, and name the field at fault."""

from __future__ import annotations

import os
import threading

import pytest

from app.inputs import InputError, check_payload, model_inputs
from samplers.catalog import ModelInfo

SEQUENCE = ModelInfo("seq", "sequence", "rnn", [784], 784, ["sequential", "jacobi", "scan", "auto"], "")
IMAGES = ModelInfo("img", "classifier", "densenet", [1, 28, 28], 18, ["sequential", "jacobi", "auto"], "")


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_checking_a_large_request_starts_no_thread_team() -> None:
    """One parallel torch op on a second thread leaves an OpenMP team behind, more OpenMP threads than cores, and
    the embedded worker's every later solve slower: the API thread must never run one."""
    payload = {"model": "seq", "inputs": [[0.5] * 784] * 64, "targets": [[0.25] * 784] * 64, "batch": 64}
    grown: list[int] = []

    def check() -> None:
        before = native_threads()
        check_payload("gradient", payload, SEQUENCE, 64)
        grown.append(native_threads() - before)

    thread = threading.Thread(target=check)
    thread.start()
    thread.join()
    assert grown == [0]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([[0.5] * 783], "shape"),
        ([[0.5] * 784, [0.5] * 783], "rectangular"),
        ([["0.5"] * 784], "rectangular"),
        ([[None] * 784], "rectangular"),
        ([[2**80] * 784], "rectangular"),
        ([[float("inf")] * 784], "finite"),
        ([[1.5] * 784], "[0, 1]"),
        ([], "at least one"),
        ([[0.5] * 784] * 65, "at most 64"),
    ],
)
def test_bad_sequences_name_the_inputs_field(inputs: object, message: str) -> None:
    with pytest.raises(InputError) as caught:
        check_payload("gradient", {"model": "seq", "inputs": inputs}, SEQUENCE, 64)
    assert caught.value.field == "inputs"
    assert message in caught.value.message


def test_images_take_both_layouts_and_become_float_tensors() -> None:
    flat = model_inputs({"inputs": [[[0.0] * 28] * 28] * 2}, IMAGES, 64)
    channel = model_inputs({"inputs": [[[[0.0] * 28] * 28]] * 2}, IMAGES, 64)
    assert flat is not None
    assert channel is not None
    assert tuple(flat.shape) == tuple(channel.shape) == (2, 1, 28, 28)
    assert str(flat.dtype) == "torch.float32"
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        model_inputs({"inputs": [[[2.0] * 28] * 28]}, IMAGES, 64)
    with pytest.raises(InputError) as caught:
        check_payload("gradient", {"model": "seq", "inputs": None, "targets": [[0.5] * 784]}, SEQUENCE, 64)
    assert caught.value.field == "targets"
