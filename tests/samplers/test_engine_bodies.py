"""/infer and /gradient bodies from the engine: methods agree, exactness is reported honestly."""

from pathlib import Path

import pytest
import torch

from samplers.engine import Engine, WrongKindError


@pytest.fixture(scope="module")
def engine(tiny_registry: Path) -> Engine:
    return Engine("cpu", tiny_registry)


def test_densenet_jacobi_is_bitwise_the_sequential_forward(engine: Engine) -> None:
    images = engine.test_inputs("densenet-tiny", 5, seed=3)
    sequential = engine.infer("densenet-tiny", images, "sequential")
    jacobi = engine.infer("densenet-tiny", images, "jacobi", verify=True)
    assert jacobi["outputs"] == sequential["outputs"]
    assert jacobi["verified"]["equal"] is True
    assert jacobi["exact"] is True
    assert max(jacobi["iterations"]) <= jacobi["sequential_steps"]
    assert jacobi["predictions"] == torch.tensor(sequential["outputs"]).argmax(1).tolist()


def test_tolerance_and_truncation_are_not_called_exact(engine: Engine) -> None:
    images = engine.test_inputs("densenet-tiny", 3, seed=4)
    loose = engine.infer("densenet-tiny", images, "jacobi", tol=1e-2)
    assert loose["exact"] is False
    cut = engine.infer("densenet-tiny", images, "jacobi", max_iterations=2)
    assert cut["exact"] is False
    assert cut["converged"] is False
    assert cut["residual"] > 0


@pytest.mark.parametrize("name", ["rnn-tiny", "gru-tiny"])
@pytest.mark.parametrize("batch", [1, 3, 4, 9])
def test_sequence_inference_by_jacobi_is_bitwise_the_loop(engine: Engine, name: str, batch: int) -> None:
    x = engine.test_inputs(name, batch, seed=1)
    body = engine.infer(name, x, "jacobi", verify=True)
    sequential = engine.infer(name, x, "sequential")
    assert body["exact"] is True
    assert body["verified"] == {"max_abs_diff": 0.0, "equal": True}
    assert body["outputs"] == sequential["outputs"]
    assert max(body["iterations"]) <= body["sequential_steps"]


@pytest.mark.parametrize("name", ["rnn-tiny", "gru-tiny"])
def test_gradient_bodies_agree_with_autograd(engine: Engine, name: str) -> None:
    x = engine.test_inputs(name, 3, seed=2)
    for method in ("scan", "jacobi"):
        body = engine.gradient(name, x, method, verify=True)
        assert body["exact"] is True
        assert body["verified"]["max_abs_diff"] <= 1e-5
        assert set(body["gradients"]) == {n for n, _ in engine.model(name).named_parameters()}
    cut = engine.gradient(name, x, "jacobi", max_iterations=2)
    assert cut["exact"] is False
    assert cut["iterations"] == 2


def test_wrong_kinds_are_refused(engine: Engine) -> None:
    with pytest.raises(WrongKindError):
        engine.gradient("densenet-tiny", torch.zeros(1, 25))
    with pytest.raises(WrongKindError):
        engine.infer("made-tiny", torch.zeros(1, 64))
