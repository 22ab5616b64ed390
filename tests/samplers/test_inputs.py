"""Request inputs are checked on the API's event-loop thread, without torch, and name the field at fault."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from samplers.engine import Engine
from samplers.family import Limits
from samplers.inputs import InputError
from samplers.requests import GradientRequest, InferRequest

LIMITS = Limits(max_batch_inputs=64)


@pytest.fixture(scope="module")
def engine(tiny_registry: Path) -> Engine:
    return Engine("cpu", tiny_registry)


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_checking_a_large_request_starts_no_thread_team(engine: Engine) -> None:
    """One parallel torch op on a second thread leaves an OpenMP team behind, more OpenMP threads than cores, and
    the embedded worker's every later solve slower: the API thread must never run one."""
    request = GradientRequest(model="rnn-tiny", inputs=[[0.5] * 25] * 64, targets=[[0.25] * 25] * 64)
    grown: list[int] = []

    def check() -> None:
        before = native_threads()
        engine.check("gradient", request, LIMITS)
        grown.append(native_threads() - before)

    thread = threading.Thread(target=check)
    thread.start()
    thread.join()
    assert grown == [0]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([[0.5] * 24], "shape"),
        ([[0.5] * 25, [0.5] * 24], "rectangular"),
        ([[None] * 25], "rectangular"),
        ([[2**80] * 25], "rectangular"),
        ([[float("inf")] * 25], "finite"),
        ([[1.5] * 25], "[0, 1]"),
        ([], "at least one"),
        ([[0.5] * 25] * 65, "at most 64"),
    ],
)
def test_bad_sequences_name_the_inputs_field(engine: Engine, inputs: object, message: str) -> None:
    request = InferRequest.model_construct(**{**InferRequest(model="rnn-tiny").model_dump(), "inputs": inputs})
    with pytest.raises(InputError) as caught:
        engine.check("infer", request, LIMITS)
    assert caught.value.field == "inputs"
    assert message in caught.value.message


def test_images_take_both_layouts_and_targets_need_inputs(engine: Engine) -> None:
    flat = InferRequest(model="densenet-tiny", inputs=[[[0.0] * 28] * 28] * 2)
    channel = InferRequest(model="densenet-tiny", inputs=[[[[0.0] * 28] * 28]] * 2)
    engine.check("infer", flat, LIMITS)
    engine.check("infer", channel, LIMITS)
    assert engine.call("infer", **flat.model_dump()).outputs == engine.call("infer", **channel.model_dump()).outputs
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        engine.check("infer", InferRequest(model="densenet-tiny", inputs=[[[2.0] * 28] * 28]), LIMITS)
    with pytest.raises(InputError) as caught:
        engine.check("gradient", GradientRequest(model="rnn-tiny", targets=[[0.5] * 25]), LIMITS)
    assert caught.value.field == "targets"
    with pytest.raises(InputError) as caught:
        engine.check("infer", InferRequest(model="rnn-tiny", batch=65), LIMITS)
    assert caught.value.field == "batch"
