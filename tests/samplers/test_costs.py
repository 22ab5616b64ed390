"""Cost estimates: what admission refuses and what a worker's memory budget counts (shipped models' manifests)."""

from __future__ import annotations

import pytest

from app.settings import Settings
from samplers.engine import Engine
from samplers.inputs import InputError
from samplers.requests import GradientRequest, InferRequest, SampleRequest

LIMITS = Settings().limits  # the defaults: sized for a 4 GB container


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine("cpu")  # reads manifests; nothing is loaded to estimate


def test_every_request_within_the_documented_limits_fits_but_hopeless_jacobi(engine: Engine) -> None:
    for batch in (1, 64):
        for method in ("sequential", "scan"):
            engine.check(
                "gradient", GradientRequest(model="gru-fmnist", batch=batch, method=method, verify=True), LIMITS
            )
        for model in ("densenet-fmnist", "gru-fmnist", "rnn-fmnist"):
            engine.check("infer", InferRequest(model=model, batch=batch, method="jacobi", verify=True), LIMITS)
    engine.check("sample", SampleRequest(model="pixelcnnpp-fmnist", num_samples=32, verify=True), LIMITS)
    with pytest.raises(InputError, match="GFLOP by jacobi") as caught:  # ~T iterations of T steps: minutes here
        engine.check("gradient", GradientRequest(model="gru-fmnist", batch=64, method="jacobi"), LIMITS)
    assert caught.value.field == "batch"


def test_costs_grow_with_the_batch_and_verify(engine: Engine) -> None:
    def cost(**fields: object) -> tuple[int, float]:
        c = engine.check("gradient", GradientRequest(model="gru-fmnist", **fields), LIMITS)  # type: ignore[arg-type]
        return c.memory, c.flops

    small, large = cost(batch=4, method="scan"), cost(batch=64, method="scan")
    assert small[0] < large[0] < LIMITS.max_memory
    assert large[1] == pytest.approx(16 * small[1])
    assert cost(batch=4, method="scan", verify=True)[1] > small[1]
    assert cost(batch=4, method="sequential")[1] < small[1]  # BPTT: O(T H^2); the scan: O(T H^3 log T)
